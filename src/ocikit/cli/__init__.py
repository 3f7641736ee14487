"""The command line: parse arguments, call the library, render text, JSON and progress."""

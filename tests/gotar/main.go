// gotar: Go's archive/tar as an oracle for ocikit's tar reader.
//
// It reads test cases from standard input, each a 4-byte big-endian length and that many
// bytes of a tar stream, and writes one JSON line per case: the entries Go's reader returns
// (strings as hex, because names are bytes) with a digest of each entry's data, read whole as
// a consumer such as docker's layer applier reads it, and the error that ended the stream.
//
// "gotar clean" reads names instead, one per line in hex, and writes filepath.Clean of each
// (in hex): how docker's loader compares the names of a layer.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
)

type entry struct {
	Type     int         `json:"type"`
	Name     string      `json:"name"`
	Linkname string      `json:"linkname"`
	Size     int64       `json:"size"`
	Mode     int64       `json:"mode"`
	UID      int         `json:"uid"`
	GID      int         `json:"gid"`
	Mtime    [2]int64    `json:"mtime"`
	Uname    string      `json:"uname"`
	Gname    string      `json:"gname"`
	Devmajor int64       `json:"devmajor"`
	Devminor int64       `json:"devminor"`
	PAX      [][2]string `json:"pax"`
	Data     string      `json:"data"`
	DataLen  int64       `json:"datalen"`
}

type result struct {
	Entries []entry `json:"entries"`
	Error   *string `json:"error"`
}

func hx(s string) string { return hex.EncodeToString([]byte(s)) }

func read(data []byte) result {
	tr := tar.NewReader(bytes.NewReader(data))
	res := result{Entries: []entry{}}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return res
		}
		if err != nil {
			msg := err.Error()
			res.Error = &msg
			return res
		}
		e := entry{
			Type: int(h.Typeflag), Name: hx(h.Name), Linkname: hx(h.Linkname), Size: h.Size,
			Mode: h.Mode, UID: h.Uid, GID: h.Gid, Uname: hx(h.Uname), Gname: hx(h.Gname),
			Devmajor: h.Devmajor, Devminor: h.Devminor,
			Mtime: [2]int64{h.ModTime.Unix(), int64(h.ModTime.Nanosecond())},
		}
		if h.PAXRecords != nil {
			e.PAX = [][2]string{}
			for k, v := range h.PAXRecords {
				e.PAX = append(e.PAX, [2]string{hx(k), hx(v)})
			}
			sort.Slice(e.PAX, func(i, j int) bool { return e.PAX[i][0] < e.PAX[j][0] })
		}
		sum := sha256.New()
		n, err := io.Copy(sum, tr)
		e.Data, e.DataLen = hex.EncodeToString(sum.Sum(nil)), n
		res.Entries = append(res.Entries, e)
		if err != nil {
			msg := err.Error()
			res.Error = &msg
			return res
		}
	}
}

func clean(in *bufio.Reader, out *bufio.Writer) {
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return
		}
		name, err := hex.DecodeString(line[:len(line)-1])
		if err != nil {
			panic(err)
		}
		out.WriteString(hx(filepath.Clean(string(name))) + "\n")
		out.Flush()
	}
}

func main() {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriter(os.Stdout)
	if len(os.Args) > 1 && os.Args[1] == "clean" {
		clean(in, out)
		return
	}
	enc := json.NewEncoder(out)
	var size [4]byte
	for {
		if _, err := io.ReadFull(in, size[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			panic(err)
		}
		data := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(in, data); err != nil {
			panic(err)
		}
		if err := enc.Encode(read(data)); err != nil {
			panic(err)
		}
		out.Flush()
	}
	out.Flush()
}

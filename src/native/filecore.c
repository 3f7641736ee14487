/*
 * ocikit._filecore: the per-file work of builds, in C (the pure-Python path in
 * build/imports.py and layer/tarwriter.py is the reference, and the fallback).
 *
 * scan(dir_fd, names, inline_max, budget, listed=None)
 *     Each name of one directory, in one call, the GIL released: lstat (never followed;
 *     or the caller's, listed);
 *     a symlink's target read; a regular file opened (O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
 *     O_CLOEXEC), checked to be the regular file the lstat saw (device and inode), read and
 *     SHA-256 hashed (OpenSSL's EVP, the digest hashlib gives): whole into memory when the
 *     lstat said it is at most inline_max bytes (its bytes kept while they fit in budget),
 *     else streamed through the hash. Nothing is refused here with an error: whatever is
 *     not as expected (a failed lstat, open, fstat or read, another file or kind than the
 *     lstat saw) is handed back undone, and the Python path does it again and decides,
 *     with its own errors. So both paths fail the same way, and C never reads what the
 *     Python path would not (a fifo, a device, a symlink's target).
 *
 * read_again(dir_fd, name, dev, ino, size, sha256)
 *     A file that was not kept in memory, read again whole when the layer is written, from
 *     the directory it was listed in: its bytes only if it is still the file (device and
 *     inode) that was hashed, exactly size bytes, with that hash; else None, and the Python
 *     path reads it and says what changed.
 *
 * tar_header(name, kind, size, mode, uid, gid, mtime, linkname, devmajor, devminor)
 *     The header block(s) layer/tarwriter.py's tar_header writes for an entry without
 *     xattrs, byte for byte (ustar; a PAX header before it for a long or non-ASCII name or
 *     link target, or a number too large for its field); None for what it leaves to Python
 *     (a number that is negative or beyond 64 bits, a device number too large, a type that
 *     is not one byte).
 *
 * put(buf, limit, name, kind, size, mode, uid, gid, mtime, linkname, data)
 *     An entry appended to layer/tarwriter.py's TarOutput buffer (a bytearray) in one call:
 *     its header, then its content (bytes already in memory) and the padding, where the
 *     buffer stays under limit (where TarOutput would not flush: the layer's writes, and so
 *     its compressed bytes, are cut where the Python path cuts them); else False.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define STREAM_CHUNK (1 << 20)

static EVP_MD *sha256_md;           /* fetched once */
static PyObject *stat_result_type; /* os.stat_result */

/* A name of one entry of the directory fd: not empty, not "." or "..", no '/' (NULs are
 * refused by the caller); anything else could resolve past the directory. */
static int one_entry(const char *name, size_t len) {
    if (len == 0 || memchr(name, '/', len) != NULL)
        return 0;
    return !(name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')));
}

static const char not_one_entry[] = "a name must be one entry of the directory";

/* ------------------------------------------------------------------ scan */

enum { R_NONE = 0, R_STAT, R_FILE, R_LINK };

struct result {
    int what;             /* R_NONE: nothing done (the Python path does it all) */
    int listed;           /* the lstat was given (in st: mode, dev, ino, size) */
    struct stat st;       /* R_STAT and up: the lstat */
    long long mtime;      /* int(st_mtime) as Python computes it */
    long long size;       /* R_FILE: bytes read */
    unsigned char md[32]; /* R_FILE: their sha256 */
    Py_ssize_t kept;      /* R_FILE: offset of the kept bytes in the arena, or -1 */
    Py_ssize_t link_len;  /* R_LINK: the target's length */
    char *link;           /* R_LINK: the target (malloc) */
};

struct arena {
    char *buf;
    size_t len, cap;
};

static int arena_room(struct arena *a, size_t need) {
    if (a->cap - a->len >= need)
        return 0;
    size_t cap = a->cap ? a->cap : (size_t)1 << 16;
    while (cap - a->len < need)
        cap *= 2;
    char *buf = realloc(a->buf, cap);
    if (buf == NULL)
        return -1;
    a->buf = buf;
    a->cap = cap;
    return 0;
}

/* read() until n bytes or the end of the file; -1 on an error */
static ssize_t read_full(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Python's int(st.st_mtime): the float seconds + nanoseconds * 1e-9, truncated */
static int python_mtime(const struct stat *st, long long *out) {
    long long sec = (long long)st->st_mtim.tv_sec;
    if (sec > (1LL << 52) || sec < -(1LL << 52))
        return -1;
    double f = (double)sec + (double)st->st_mtim.tv_nsec * 1e-9;
    *out = (long long)f;
    return 0;
}

/* The scan runs with the GIL released; every CHECK_EVERY bytes read (and names scanned,
 * counted CHECK_NAME each), it takes the GIL back for PyErr_CheckSignals: Ctrl-C, coming
 * while a large file is hashed, stops the scan within a few MiB (the Python path's loop
 * sees it after each chunk), not after the whole file. */
#define CHECK_EVERY (16LL << 20)
#define CHECK_NAME 4096

struct pace {
    PyThreadState *ts; /* the thread's state while the GIL is released */
    long long since;   /* bytes read since the last look */
    int stop;          /* a signal's handler raised: the exception is set, the scan stops */
};

/* n more bytes read: 1 when the scan must stop (the exception is set) */
static int interrupted(struct pace *p, long long n) {
    p->since += n;
    if (p->since >= CHECK_EVERY && !p->stop) {
        p->since = 0;
        PyEval_RestoreThread(p->ts);
        if (PyErr_CheckSignals() < 0)
            p->stop = 1;
        p->ts = PyEval_SaveThread();
    }
    return p->stop;
}

/* One regular file, already lstat'ed: 0 done, -1 handed back (r->what stays R_STAT). */
static int read_file(int dir_fd, const char *name, struct result *r, long long inline_max,
                     long long *budget, struct arena *a, char **chunk, EVP_MD_CTX *ctx,
                     struct pace *pace) {
    long long size = 0;
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat fst;
    if (fstat(fd, &fst) != 0 || !S_ISREG(fst.st_mode) || fst.st_dev != r->st.st_dev ||
        fst.st_ino != r->st.st_ino)
        goto fail;
    if (EVP_DigestInit_ex(ctx, sha256_md, NULL) != 1)
        goto fail;
    r->kept = -1;
    if ((long long)r->st.st_size <= inline_max) {
        size_t want = (size_t)inline_max + 1;
        if (arena_room(a, want) != 0)
            goto fail;
        char *at = a->buf + a->len;
        ssize_t n = read_full(fd, at, want);
        if (n < 0 || EVP_DigestUpdate(ctx, at, (size_t)n) != 1 || interrupted(pace, n))
            goto fail;
        size = n;
        if (n <= inline_max && n <= *budget) { /* all of it (it ended), and it fits */
            r->kept = (Py_ssize_t)a->len;
            a->len += (size_t)n;
            *budget -= n;
        }
        if (n <= inline_max)
            goto done;
        /* it grew while read: the rest streamed */
    }
    if (*chunk == NULL && (*chunk = malloc(STREAM_CHUNK)) == NULL)
        goto fail;
    for (;;) {
        ssize_t n = read(fd, *chunk, STREAM_CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (n == 0)
            break;
        if (EVP_DigestUpdate(ctx, *chunk, (size_t)n) != 1 || interrupted(pace, n))
            goto fail;
        size += n;
    }
done:
    if (EVP_DigestFinal_ex(ctx, r->md, NULL) != 1)
        goto fail;
    close(fd);
    r->size = size;
    r->what = R_FILE;
    return 0;
fail:
    if (r->kept >= 0) {
        a->len = (size_t)r->kept; /* only the last file's bytes can be at the end */
        r->kept = -1;
    }
    close(fd);
    return -1;
}

/* r->listed: the caller's lstat is in r->st (none is made here) */
static void scan_one(int dir_fd, const char *name, struct result *r, long long inline_max,
                     long long *budget, struct arena *a, char **chunk, EVP_MD_CTX *ctx,
                     struct pace *pace) {
    r->kept = -1;
    if (!r->listed) {
        r->what = R_NONE;
        if (fstatat(dir_fd, name, &r->st, AT_SYMLINK_NOFOLLOW) != 0)
            return;
        if (python_mtime(&r->st, &r->mtime) != 0)
            return;
    }
    r->what = R_STAT;
    if (S_ISREG(r->st.st_mode)) {
        long long before = *budget;
        if (read_file(dir_fd, name, r, inline_max, budget, a, chunk, ctx, pace) != 0)
            *budget = before;
    } else if (S_ISLNK(r->st.st_mode)) {
        char buf[PATH_MAX + 1];
        ssize_t n = readlinkat(dir_fd, name, buf, PATH_MAX); /* as os.readlink reads it */
        if (n < 0 || n >= PATH_MAX)
            return;
        r->link = malloc((size_t)n + 1);
        if (r->link == NULL)
            return;
        memcpy(r->link, buf, (size_t)n);
        r->link_len = n;
        r->what = R_LINK;
    }
}

static PyObject *make_stat(const struct result *r) {
    const struct stat *st = &r->st;
    PyObject *fields = Py_BuildValue(
        "(KKKKKKLLLL)", (unsigned long long)st->st_mode, (unsigned long long)st->st_ino,
        (unsigned long long)st->st_dev, (unsigned long long)st->st_nlink,
        (unsigned long long)st->st_uid, (unsigned long long)st->st_gid,
        (long long)st->st_size, (long long)st->st_atim.tv_sec, r->mtime,
        (long long)st->st_ctim.tv_sec);
    if (fields == NULL)
        return NULL;
    PyObject *res = PyObject_CallOneArg(stat_result_type, fields);
    Py_DECREF(fields);
    return res;
}

static void hex_chars(const unsigned char *md, char *hex) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
}

static PyObject *hex_of(const unsigned char *md) {
    char hex[64];
    hex_chars(md, hex);
    return PyUnicode_FromStringAndSize(hex, 64);
}

static PyObject *result_item(const struct result *r, const struct arena *a, PyObject *given) {
    if (r->what == R_NONE)
        return Py_BuildValue("(OO)", Py_None, Py_None);
    PyObject *st = given != NULL ? Py_NewRef(given) : make_stat(r);
    if (st == NULL)
        return NULL;
    PyObject *done = NULL;
    if (r->what == R_FILE) {
        PyObject *hex = hex_of(r->md);
        PyObject *data = r->kept >= 0
                             ? PyBytes_FromStringAndSize(a->buf + r->kept, (Py_ssize_t)r->size)
                             : Py_NewRef(Py_None);
        if (hex != NULL && data != NULL)
            done = Py_BuildValue("(LOO)", r->size, hex, data);
        Py_XDECREF(hex);
        Py_XDECREF(data);
    } else if (r->what == R_LINK) {
        done = PyUnicode_DecodeFSDefaultAndSize(r->link, r->link_len);
    } else {
        done = Py_NewRef(Py_None);
    }
    if (done == NULL) {
        Py_DECREF(st);
        return NULL;
    }
    PyObject *item = PyTuple_Pack(2, st, done);
    Py_DECREF(st);
    Py_DECREF(done);
    return item;
}

/* the caller's lstat (an os.stat_result): what scan_one reads of it */
static int given_stat(PyObject *st, struct result *r) {
    if (!PyObject_TypeCheck(st, (PyTypeObject *)stat_result_type)) {
        PyErr_SetString(PyExc_TypeError, "listed: os.stat_result or None");
        return -1;
    }
    unsigned long long v[4];
    static const Py_ssize_t at[] = {0, 1, 2, 6}; /* st_mode, st_ino, st_dev, st_size */
    for (int i = 0; i < 4; i++) {
        v[i] = PyLong_AsUnsignedLongLong(PyStructSequence_GetItem(st, at[i]));
        if (v[i] == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
    }
    memset(&r->st, 0, sizeof r->st);
    r->st.st_mode = (mode_t)v[0];
    r->st.st_ino = (ino_t)v[1];
    r->st.st_dev = (dev_t)v[2];
    r->st.st_size = (off_t)v[3];
    r->listed = 1;
    return 0;
}

PyDoc_STRVAR(scan_doc,
             "scan(dir_fd, names, inline_max, budget, listed=None) -> list\n\n"
             "For each name of the directory dir_fd: (lstat, done), where lstat is an\n"
             "os.stat_result (st_mtime: int(st_mtime)) and done is, for a regular file,\n"
             "(size, sha256 hex, bytes or None: kept while they fit in budget, for files of at\n"
             "most inline_max bytes), for a symlink its target, else None; (None, None) or\n"
             "(lstat, None) for what the caller must do itself (nothing is raised for a file).\n"
             "listed: the caller's lstat of each name (os.stat_result, or None: made here),\n"
             "which the file opened must still be.");

static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    int dir_fd;
    PyObject *names, *listed = Py_None, *given = NULL, *encoded = NULL, *out = NULL;
    long long inline_max, budget;
    struct result *results = NULL;
    EVP_MD_CTX *ctx = NULL;
    struct arena a = {NULL, 0, 0};
    char *chunk = NULL;
    if (!PyArg_ParseTuple(args, "iO!LL|O:scan", &dir_fd, &PyList_Type, &names, &inline_max,
                          &budget, &listed))
        return NULL;
    if (inline_max < 0 || inline_max > (1LL << 30)) {
        PyErr_SetString(PyExc_ValueError, "inline_max out of range");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(names);
    if (listed != Py_None && (!PyList_Check(listed) || PyList_GET_SIZE(listed) != count)) {
        PyErr_SetString(PyExc_TypeError, "listed: a list as long as names, or None");
        return NULL;
    }
    /* listed, held as it is now (the list may change meanwhile) */
    if (listed != Py_None && (given = PyList_AsTuple(listed)) == NULL)
        return NULL;
    encoded = PyList_New(count); /* the names as bytes, held while we work */
    if (encoded == NULL) {
        Py_XDECREF(given);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        PyObject *raw = NULL;
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            goto fail_names;
        }
        raw = PyUnicode_EncodeFSDefault(name);
        if (raw == NULL)
            goto fail_names;
        if ((Py_ssize_t)strlen(PyBytes_AS_STRING(raw)) != PyBytes_GET_SIZE(raw)) {
            Py_DECREF(raw);
            PyErr_SetString(PyExc_ValueError, "embedded null byte");
            goto fail_names;
        }
        if (!one_entry(PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw))) {
            Py_DECREF(raw);
            PyErr_SetString(PyExc_ValueError, not_one_entry);
            goto fail_names;
        }
        PyList_SET_ITEM(encoded, i, raw);
    }
    size_t slots = count > 0 ? (size_t)count : 1;
    results = calloc(slots, sizeof *results);
    ctx = EVP_MD_CTX_new();
    if (results == NULL || ctx == NULL) {
        free(results);
        EVP_MD_CTX_free(ctx);
        PyErr_NoMemory();
        goto fail_names;
    }
    for (Py_ssize_t i = 0; given != NULL && i < count; i++) {
        PyObject *st = PyTuple_GET_ITEM(given, i);
        if (st != Py_None && given_stat(st, &results[i]) != 0) {
            free(results);
            EVP_MD_CTX_free(ctx);
            goto fail_names;
        }
    }
    struct pace pace = {PyEval_SaveThread(), 0, 0};
    for (Py_ssize_t i = 0; i < count && !interrupted(&pace, CHECK_NAME); i++)
        scan_one(dir_fd, PyBytes_AS_STRING(PyList_GET_ITEM(encoded, i)), &results[i], inline_max,
                 &budget, &a, &chunk, ctx, &pace);
    PyEval_RestoreThread(pace.ts);
    free(chunk);
    EVP_MD_CTX_free(ctx);
    Py_DECREF(encoded);
    out = pace.stop ? NULL : PyList_New(count); /* stopped: the handler's exception */
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        PyObject *st = results[i].listed ? PyTuple_GET_ITEM(given, i) : NULL;
        PyObject *item = result_item(&results[i], &a, st);
        if (item == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, item);
    }
    for (Py_ssize_t i = 0; i < count; i++)
        free(results[i].link);
    free(results);
    free(a.buf);
    Py_XDECREF(given);
    return out;
fail_names:
    Py_DECREF(encoded);
    Py_XDECREF(given);
    return NULL;
}

/* -------------------------------------------------------- read again, checked */

PyDoc_STRVAR(read_again_doc,
             "read_again(dir_fd, name, dev, ino, size, sha256) -> bytes | None\n\n"
             "The regular file name of dir_fd, still the file (dev, ino) that was hashed, read\n"
             "whole (the GIL released): its bytes when they are exactly size bytes hashing to\n"
             "sha256 (hex); else None, nothing raised (the caller reads it again its own way,\n"
             "and says what changed). The caller bounds size.");

static PyObject *read_again(PyObject *self, PyObject *args) {
    (void)self;
    int dir_fd;
    PyObject *name_obj;
    unsigned long long dev, ino;
    long long size;
    const char *want_hex;
    Py_ssize_t want_len;
    if (!PyArg_ParseTuple(args, "iO&KKLs#:read_again", &dir_fd, PyUnicode_FSConverter, &name_obj,
                          &dev, &ino, &size, &want_hex, &want_len))
        return NULL;
    if (!one_entry(PyBytes_AS_STRING(name_obj), (size_t)PyBytes_GET_SIZE(name_obj))) {
        Py_DECREF(name_obj);
        PyErr_SetString(PyExc_ValueError, not_one_entry);
        return NULL;
    }
    if (size < 0 || size > (1LL << 30) || want_len != 64) {
        Py_DECREF(name_obj);
        PyErr_SetString(PyExc_ValueError, "read_again: size or sha256 out of range");
        return NULL;
    }
    char *buf = malloc((size_t)size + 1);
    if (buf == NULL) {
        Py_DECREF(name_obj);
        return PyErr_NoMemory();
    }
    const char *name = PyBytes_AS_STRING(name_obj);
    int ok = 0;
    unsigned char md[32];
    char hex[64];
    Py_BEGIN_ALLOW_THREADS
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (unsigned long long)st.st_dev == dev &&
            (unsigned long long)st.st_ino == ino) {
            ssize_t n = read_full(fd, buf, (size_t)size + 1); /* one more: did it grow? */
            unsigned int mdlen = 0;
            if (n == (ssize_t)size && EVP_Digest(buf, (size_t)n, md, &mdlen, sha256_md, NULL) == 1 &&
                mdlen == 32) {
                hex_chars(md, hex);
                ok = memcmp(hex, want_hex, 64) == 0;
            }
        }
        close(fd);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(name_obj);
    PyObject *out = ok ? PyBytes_FromStringAndSize(buf, (Py_ssize_t)size) : Py_NewRef(Py_None);
    free(buf);
    return out;
}

/* ------------------------------------------------------------ tar headers */

#define USTAR_MAX_SIZE 077777777777LL /* size, mtime: 11 octal digits */
#define USTAR_MAX_ID 07777777LL       /* uid, gid, device numbers: 7 */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_put(struct buf *b, const void *data, size_t n) {
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len < n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

/* "%d %s=%s\n", its length counting itself, as tarwriter._pax_record writes it */
static int pax_record(struct buf *b, const char *key, const char *value, size_t vlen) {
    size_t body = 1 + strlen(key) + 1 + vlen + 1; /* " key=value\n" */
    size_t n = body + 1;
    char digits[32];
    for (;;) {
        int d = snprintf(digits, sizeof digits, "%zu", n);
        if ((size_t)d + body == n)
            break;
        n = (size_t)d + body;
    }
    int d = snprintf(digits, sizeof digits, "%zu", n);
    if (buf_put(b, digits, (size_t)d) || buf_put(b, " ", 1) || buf_put(b, key, strlen(key)) ||
        buf_put(b, "=", 1) || buf_put(b, value, vlen) || buf_put(b, "\n", 1))
        return -1;
    return 0;
}

/* "%0*o\0" in a field of width+1 bytes; the value fits (checked by the caller) */
static void octal(char *field, int width, unsigned long long value) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%0*llo", width, value);
    memcpy(field, tmp, (size_t)width);
    field[width] = '\0';
}

static void ustar(char *h, const char *name, size_t name_len, char kind, long long size,
                  long long mode, long long uid, long long gid, long long mtime, const char *link,
                  size_t link_len, long long devmajor, long long devminor) {
    memset(h, 0, 512);
    memcpy(h, name, name_len);
    octal(h + 100, 7, (unsigned long long)(mode & 07777));
    octal(h + 108, 7, (unsigned long long)uid);
    octal(h + 116, 7, (unsigned long long)gid);
    octal(h + 124, 11, (unsigned long long)size);
    octal(h + 136, 11, (unsigned long long)(mtime < 0 ? 0 : mtime));
    memset(h + 148, ' ', 8);
    h[156] = kind;
    memcpy(h + 157, link, link_len);
    memcpy(h + 257, "ustar\0" "00", 8);
    octal(h + 329, 7, (unsigned long long)devmajor);
    octal(h + 337, 7, (unsigned long long)devminor);
    unsigned long sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    char tmp[16];
    snprintf(tmp, sizeof tmp, "%06lo", sum);
    memcpy(h + 148, tmp, 6);
    h[154] = '\0';
    h[155] = ' ';
}

/* a Python int as a long long; 1 when it is not one (not an int, or beyond 64 bits) */
static int as_ll(PyObject *o, long long *out) {
    if (!PyLong_Check(o))
        return 1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        return 1;
    *out = v;
    return 0;
}

/* The header block(s) of the 10 arguments of tar_header (name, kind, size, mode, uid, gid,
 * mtime, linkname, devmajor, devminor) into out (empty): 1 done, 0 handed back to Python,
 * -1 an error (raised). */
static int header_into(PyObject *const *args, struct buf *out) {
    PyObject *name = args[0], *kind = args[1], *linkname = args[7];
    if (!PyUnicode_Check(name) || !PyBytes_Check(kind) || !PyUnicode_Check(linkname) ||
        PyBytes_GET_SIZE(kind) != 1)
        return 0;
    long long num[7]; /* size, mode, uid, gid, mtime, devmajor, devminor */
    static const int at[] = {2, 3, 4, 5, 6, 8, 9};
    for (int i = 0; i < 7; i++) {
        int rc = as_ll(args[at[i]], &num[i]);
        if (rc != 0)
            return rc > 0 ? 0 : -1;
    }
    long long size = num[0], mode = num[1], uid = num[2], gid = num[3], mtime = num[4];
    long long devmajor = num[5], devminor = num[6];
    if (size < 0 || uid < 0 || gid < 0 || devmajor < 0 || devminor < 0 ||
        devmajor > USTAR_MAX_ID || devminor > USTAR_MAX_ID)
        return 0;
    if (mtime < 0)
        mtime = 0;

    PyObject *raw_name = PyUnicode_AsEncodedString(name, "utf-8", "surrogateescape");
    if (raw_name == NULL)
        return -1;
    PyObject *raw_link = PyUnicode_AsEncodedString(linkname, "utf-8", "surrogateescape");
    if (raw_link == NULL) {
        Py_DECREF(raw_name);
        return -1;
    }
    const char *np = PyBytes_AS_STRING(raw_name), *lp = PyBytes_AS_STRING(raw_link);
    size_t nlen = (size_t)PyBytes_GET_SIZE(raw_name), llen = (size_t)PyBytes_GET_SIZE(raw_link);
    int pax_path = nlen > 100 || !PyUnicode_IS_ASCII(name);
    int pax_link = llen > 100 || !PyUnicode_IS_ASCII(linkname);
    int pax_size = size > USTAR_MAX_SIZE, pax_uid = uid > USTAR_MAX_ID;
    int pax_gid = gid > USTAR_MAX_ID, pax_mtime = mtime > USTAR_MAX_SIZE;

    int rc = -1;
    struct buf rec = {NULL, 0, 0};
    char number[32];
    /* the records in key order: gid, linkpath, mtime, path, size, uid */
    int failed = 0;
    if (pax_gid) {
        int d = snprintf(number, sizeof number, "%lld", gid);
        failed |= pax_record(&rec, "gid", number, (size_t)d);
    }
    if (pax_link)
        failed |= pax_record(&rec, "linkpath", lp, llen);
    if (pax_mtime) {
        int d = snprintf(number, sizeof number, "%lld", mtime);
        failed |= pax_record(&rec, "mtime", number, (size_t)d);
    }
    if (pax_path)
        failed |= pax_record(&rec, "path", np, nlen);
    if (pax_size) {
        int d = snprintf(number, sizeof number, "%lld", size);
        failed |= pax_record(&rec, "size", number, (size_t)d);
    }
    if (pax_uid) {
        int d = snprintf(number, sizeof number, "%lld", uid);
        failed |= pax_record(&rec, "uid", number, (size_t)d);
    }
    if (failed) {
        PyErr_NoMemory();
        goto end;
    }
    if (rec.len > (size_t)USTAR_MAX_SIZE) {
        rc = 0;
        goto end;
    }
    char h[512];
    if (rec.len) {
        static const char zeros[512];
        ustar(h, "././@PaxHeader", 14, 'x', (long long)rec.len, 0644, 0, 0, 0, "", 0, 0, 0);
        if (buf_put(out, h, 512) || buf_put(out, rec.p, rec.len) ||
            buf_put(out, zeros, (512 - rec.len % 512) % 512)) {
            PyErr_NoMemory();
            goto end;
        }
    }
    ustar(h, np, nlen > 100 ? 100 : nlen, PyBytes_AS_STRING(kind)[0], pax_size ? 0 : size, mode,
          pax_uid ? 0 : uid, pax_gid ? 0 : gid, pax_mtime ? 0 : mtime, lp, llen > 100 ? 100 : llen,
          devmajor, devminor);
    if (buf_put(out, h, 512)) {
        PyErr_NoMemory();
        goto end;
    }
    rc = 1;
end:
    free(rec.p);
    Py_DECREF(raw_name);
    Py_DECREF(raw_link);
    return rc;
}

PyDoc_STRVAR(tar_header_doc,
             "tar_header(name, kind, size, mode, uid, gid, mtime, linkname, devmajor, devminor)\n"
             "-> bytes | None\n\n"
             "The header block(s) of layer.tarwriter.tar_header for an entry without xattrs, the\n"
             "same bytes; None where that function must decide (a negative number or one\n"
             "beyond 64 bits, a device number beyond its field, a type that is not one byte).");

static PyObject *tar_header(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "tar_header takes 10 arguments");
        return NULL;
    }
    struct buf out = {NULL, 0, 0};
    int rc = header_into(args, &out);
    PyObject *res = NULL;
    if (rc > 0)
        res = PyBytes_FromStringAndSize(out.p, (Py_ssize_t)out.len);
    else if (rc == 0)
        res = Py_NewRef(Py_None);
    free(out.p);
    return res;
}

PyDoc_STRVAR(put_doc,
             "put(buf, limit, name, kind, size, mode, uid, gid, mtime, linkname, data) -> bool\n\n"
             "Appends to the bytearray buf an entry's header (tar_header's bytes), then data\n"
             "(bytes: the whole content, len(data) == size) and its padding to 512 bytes, when\n"
             "buf stays under limit bytes (where layer.tarwriter.TarOutput would not flush);\n"
             "False, buf unchanged, where the caller must write it itself.");

static PyObject *put(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "put takes 11 arguments");
        return NULL;
    }
    PyObject *target = args[0], *data = args[10];
    if (!PyByteArray_Check(target) || !PyLong_Check(args[1]) ||
        (data != Py_None && !PyBytes_Check(data))) {
        PyErr_SetString(PyExc_TypeError, "put(bytearray, int, ..., bytes | None)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    PyObject *const *hargs = args + 1;          /* name .. linkname at 1..8 of hargs: */
    PyObject *fields[10];                       /* ... with the device numbers 0, 0 */
    for (int i = 0; i < 8; i++)
        fields[i] = hargs[i + 1];
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    fields[8] = fields[9] = zero;
    Py_ssize_t dlen = data == Py_None ? 0 : PyBytes_GET_SIZE(data);
    if (data != Py_None) {
        long long size;
        if (as_ll(fields[2], &size) != 0 || size != dlen) {
            Py_DECREF(zero);
            if (PyErr_Occurred())
                return NULL;
            PyErr_SetString(PyExc_ValueError, "put: size is not len(data)");
            return NULL;
        }
    }
    struct buf head = {NULL, 0, 0};
    int rc = header_into(fields, &head);
    Py_DECREF(zero);
    PyObject *res = NULL;
    if (rc < 0)
        goto end;
    Py_ssize_t have = PyByteArray_GET_SIZE(target);
    Py_ssize_t pad = (512 - dlen % 512) % 512;
    if (rc == 0 || have + (Py_ssize_t)head.len + dlen >= limit) {
        res = Py_NewRef(Py_False);
        goto end;
    }
    if (PyByteArray_Resize(target, have + (Py_ssize_t)head.len + dlen + pad) != 0)
        goto end;
    char *at = PyByteArray_AS_STRING(target) + have;
    memcpy(at, head.p, head.len);
    at += head.len;
    if (dlen)
        memcpy(at, PyBytes_AS_STRING(data), (size_t)dlen);
    memset(at + dlen, 0, (size_t)pad);
    res = Py_NewRef(Py_True);
end:
    free(head.p);
    return res;
}

/* ----------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"read_again", read_again, METH_VARARGS, read_again_doc},
    {"tar_header", (PyCFunction)(void (*)(void))tar_header, METH_FASTCALL, tar_header_doc},
    {"put", (PyCFunction)(void (*)(void))put, METH_FASTCALL, put_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ocikit._filecore",
    "The per-file work of builds (build/imports.py, layer/tarwriter.py), in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__filecore(void) {
    if (sha256_md == NULL) {
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (sha256_md == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA256");
            return NULL;
        }
    }
    if (stat_result_type == NULL) {
        PyObject *os = PyImport_ImportModule("os");
        if (os == NULL)
            return NULL;
        stat_result_type = PyObject_GetAttrString(os, "stat_result");
        Py_DECREF(os);
        if (stat_result_type == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STREAM_CHUNK", STREAM_CHUNK) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

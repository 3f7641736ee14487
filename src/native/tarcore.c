/* ocikit._tarcore: tar headers parsed in C, with the rules of ocikit/layer/tarstream.py.
 *
 * The Python reader (tarstream.py) stays the reference and handles everything unusual:
 * this module only ever answers for a header it can read completely, exactly as
 * ``_parse_header`` reads it, and otherwise says "not mine" (None, or the end of a batch)
 * so that the Python path parses the header again and gives its verdict and its message.
 * It never raises for the content of a header.
 *
 *   header(block, cls)     -> the header (512 bytes) as ``_parse_header`` returns it, built
 *                             by calling ``cls`` (TarEntry), or None where ``_parse_header``
 *                             would raise.
 *   headers(buf, pos, cls) -> the entries of the plain headers found one after another from
 *                             ``buf[pos:]``, each header's data and padding skipped, while
 *                             the next header lies wholly in ``buf``: in reverse order (the
 *                             caller pops them). The walk stops before a header that is
 *                             malformed, a zero block, a PAX (x/g), GNU long name or link
 *                             (L/K) or old GNU sparse (S) header, or a data entry with a
 *                             negative size; and after an entry whose data, padding or
 *                             following header goes past the end of ``buf``. Entries are as
 *                             ``TarStream._next`` returns a plain header's: a ``\0`` type
 *                             becomes ``5`` (a name ending in "/") or ``0``.
 *
 * Every field is read within the 512-byte block, every offset checked against the buffer's
 * length before use; numbers are 64-bit where Python's are unbounded, so every value that
 * would not fit is refused (left to Python), never wrapped.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define BLOCK 512
#define MAX_BATCH 4096 /* entries per call (a 2 MiB block holds at most 4096 headers) */

enum { FMT_V7, FMT_USTAR, FMT_GNU, FMT_STAR };

typedef struct {
    int64_t size, mode, uid, gid, mtime, devmajor, devminor;
    const unsigned char *name, *prefix, *linkname, *uname, *gname;
    size_t name_len, prefix_len, linkname_len, uname_len, gname_len;
    unsigned char type;
} header_t;

/* The length of a string field: up to its first NUL, at most n. */
static size_t cstr_len(const unsigned char *f, size_t n)
{
    const unsigned char *nul = memchr(f, 0, n);
    return nul ? (size_t)(nul - f) : n;
}

/* _octal: digits with spaces and NULs before and after them (the text stripped of both,
 * then cut at its first NUL); nothing is 0. Anything but 0-7 in what remains is malformed
 * (Python: not isdigit, or int(text, 8) fails). n <= 12, so the value is below 2**36. */
static int parse_octal(const unsigned char *f, size_t n, int64_t *out)
{
    size_t i = 0, j = n;
    while (i < j && (f[i] == ' ' || f[i] == 0))
        i++;
    while (j > i && (f[j - 1] == ' ' || f[j - 1] == 0))
        j--;
    if (i == j) {
        *out = 0;
        return 1;
    }
    j = i + cstr_len(f + i, j - i);
    uint64_t v = 0;
    for (size_t k = i; k < j; k++) {
        if (f[k] < '0' || f[k] > '7')
            return 0;
        v = v * 8 + (uint64_t)(f[k] - '0');
    }
    *out = (int64_t)v;
    return 1;
}

/* _numeric: octal, or base-256 when the first byte's high bit is set (negative, as two's
 * complement, when the next bit is set too); a value of 63 bits or more is malformed. */
static int parse_numeric(const unsigned char *f, size_t n, int64_t *out)
{
    if (!(f[0] & 0x80))
        return parse_octal(f, n, out);
    const unsigned char flip = (f[0] & 0x40) ? 0xFF : 0x00;
    uint64_t v = (uint64_t)((f[0] ^ flip) & 0x7F);
    for (size_t i = 1; i < n; i++) {
        if (v >> 55)
            return 0; /* 8 more bits: 2**63 or more (and it only grows) */
        v = (v << 8) | (uint64_t)(f[i] ^ flip);
    }
    if (v >> 63)
        return 0;
    *out = flip ? ~(int64_t)v : (int64_t)v;
    return 1;
}

/* _checksum_ok: the stored checksum (octal; malformed: not ok) is the unsigned or the signed
 * sum of the block's bytes, the checksum field counted as eight spaces. */
static int checksum_ok(const unsigned char *b)
{
    int64_t stored;
    if (!parse_octal(b + 148, 8, &stored))
        return 0;
    /* every byte summed, and the bytes >= 128 counted (each is 256 less, signed): a loop
     * the compiler vectorizes; then the checksum field's own bytes are taken out */
    uint32_t sum = 0, high = 0;
    for (size_t i = 0; i < BLOCK; i++) {
        sum += b[i];
        high += b[i] >> 7;
    }
    for (size_t i = 148; i < 156; i++) {
        sum -= b[i];
        high -= b[i] >> 7;
    }
    const int64_t u = (int64_t)sum + 256;
    const int64_t s = u - 256 * (int64_t)high;
    return stored == u || stored == s;
}

static int block_format(const unsigned char *b)
{
    if (memcmp(b + 257, "ustar\0", 6) == 0)
        return memcmp(b + 508, "tar\0", 4) == 0 ? FMT_STAR : FMT_USTAR;
    if (memcmp(b + 257, "ustar ", 6) == 0 && b[263] == ' ' && b[264] == 0)
        return FMT_GNU;
    return FMT_V7;
}

static int is_ascii(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] & 0x80)
            return 0;
    return 1;
}

/* _parse_header: 1 and *h filled, or 0 where Python raises (bad checksum, a malformed
 * number). The order of the checks does not matter here: any failure is left to Python,
 * which finds the first and reports it. */
static int parse_header(const unsigned char *b, header_t *h)
{
    if (!checksum_ok(b))
        return 0;
    const int fmt = block_format(b);
    memset(h, 0, sizeof *h);
    h->name = b;
    h->name_len = cstr_len(b, 100);
    h->linkname = b + 157;
    h->linkname_len = cstr_len(b + 157, 100);
    h->type = b[156];
    if (!parse_numeric(b + 124, 12, &h->size) || !parse_numeric(b + 100, 8, &h->mode) ||
        !parse_numeric(b + 108, 8, &h->uid) || !parse_numeric(b + 116, 8, &h->gid) ||
        !parse_numeric(b + 136, 12, &h->mtime))
        return 0;
    if (fmt == FMT_V7)
        return 1;
    h->uname = b + 265;
    h->uname_len = cstr_len(b + 265, 32);
    h->gname = b + 297;
    h->gname_len = cstr_len(b + 297, 32);
    if (!parse_numeric(b + 329, 8, &h->devmajor) || !parse_numeric(b + 337, 8, &h->devminor))
        return 0;
    int64_t unused;
    if (fmt == FMT_USTAR) {
        h->prefix = b + 345;
        h->prefix_len = cstr_len(b + 345, 155);
    } else if (fmt == FMT_STAR) {
        h->prefix = b + 345;
        h->prefix_len = cstr_len(b + 345, 131);
        if (!parse_numeric(b + 476, 12, &unused) || !parse_numeric(b + 488, 12, &unused))
            return 0;
    } else { /* GNU: atime and ctime, or (old Go writers) a prefix in their place */
        int times = 1;
        if (b[345])
            times = parse_numeric(b + 345, 12, &unused);
        if (times && b[357])
            times = parse_numeric(b + 357, 12, &unused);
        if (!times) {
            size_t n = cstr_len(b + 345, 155);
            if (is_ascii(b + 345, n)) {
                h->prefix = b + 345;
                h->prefix_len = n;
            }
        }
    }
    return 1;
}

static PyObject *decode(const unsigned char *p, size_t n)
{
    return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "surrogateescape");
}

/* The TarEntry: cls(name, type, size, linkname, mode, uid, gid, mtime, uname, gname,
 * devmajor, devminor), the order of TarEntry's fields; ``type`` is the type to report.
 * The name is the prefix, "/" and the name when there is a prefix. */
static PyObject *build(PyObject *cls, const header_t *h, unsigned char type)
{
    unsigned char joined[155 + 1 + 100];
    const unsigned char *name = h->name;
    size_t name_len = h->name_len;
    if (h->prefix_len) {
        memcpy(joined, h->prefix, h->prefix_len);
        joined[h->prefix_len] = '/';
        memcpy(joined + h->prefix_len + 1, h->name, h->name_len);
        name = joined;
        name_len = h->prefix_len + 1 + h->name_len;
    }
    PyObject *args[12] = {NULL};
    PyObject *entry = NULL;
    args[0] = decode(name, name_len);
    args[1] = PyBytes_FromStringAndSize((const char *)&type, 1);
    args[2] = PyLong_FromLongLong(h->size);
    args[3] = decode(h->linkname, h->linkname_len);
    args[4] = PyLong_FromLongLong(h->mode);
    args[5] = PyLong_FromLongLong(h->uid);
    args[6] = PyLong_FromLongLong(h->gid);
    args[7] = PyLong_FromLongLong(h->mtime);
    args[8] = decode(h->uname, h->uname_len);
    args[9] = decode(h->gname, h->gname_len);
    args[10] = PyLong_FromLongLong(h->devmajor);
    args[11] = PyLong_FromLongLong(h->devminor);
    for (int i = 0; i < 12; i++)
        if (args[i] == NULL)
            goto done;
    entry = PyObject_Vectorcall(cls, args, 12, NULL);
done:
    for (int i = 0; i < 12; i++)
        Py_XDECREF(args[i]);
    return entry;
}

static int get_block_buffer(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    return 0;
}

PyDoc_STRVAR(header_doc,
             "header(block, cls, /)\n--\n\n"
             "The 512-byte header ``block`` as tarstream._parse_header reads it (an entry "
             "built by ``cls``), or None where that raises.");

static PyObject *tarcore_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "header() takes 2 arguments (block, cls)");
        return NULL;
    }
    Py_buffer view;
    if (get_block_buffer(args[0], &view) < 0)
        return NULL;
    PyObject *result = NULL;
    header_t h;
    if (view.len != BLOCK) {
        PyErr_SetString(PyExc_ValueError, "a header is 512 bytes");
    } else if (!parse_header((const unsigned char *)view.buf, &h)) {
        result = Py_NewRef(Py_None);
    } else {
        result = build(args[1], &h, h.type);
    }
    PyBuffer_Release(&view);
    return result;
}

/* A type whose size says nothing about data (tarstream.HEADER_ONLY). */
static int header_only(unsigned char t)
{
    return t >= '1' && t <= '6';
}

/* The header's type calls for the Python path (PAX, long names, sparse). */
static int special(unsigned char t)
{
    return t == 'x' || t == 'g' || t == 'L' || t == 'K' || t == 'S';
}

PyDoc_STRVAR(headers_doc,
             "headers(buffer, pos, cls, /)\n--\n\n"
             "The plain entries whose headers follow one another in ``buffer`` from ``pos``, "
             "in reverse order (see the module's source for where the walk stops).");

static PyObject *tarcore_headers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "headers() takes 3 arguments (buffer, pos, cls)");
        return NULL;
    }
    const Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (get_block_buffer(args[0], &view) < 0)
        return NULL;
    PyObject *cls = args[2];
    PyObject *list = PyList_New(0);
    if (list == NULL)
        goto fail;
    if (start < 0 || start > view.len) {
        PyErr_SetString(PyExc_ValueError, "position outside the buffer");
        goto fail;
    }
    const unsigned char *buf = (const unsigned char *)view.buf;
    const uint64_t len = (uint64_t)view.len;
    uint64_t pos = (uint64_t)start;
    while (len - pos >= BLOCK && PyList_GET_SIZE(list) < MAX_BATCH) {
        header_t h;
        if (!parse_header(buf + pos, &h) || special(h.type))
            break;
        unsigned char type = h.type;
        int no_data = header_only(type);
        if (!no_data && h.size < 0)
            break; /* "a negative size": Python's to say */
        if (type == 0) {
            /* a directory when its final name ends in "/" (the prefix's separator when
             * the name is empty) */
            int slash = h.name_len ? h.name[h.name_len - 1] == '/' : h.prefix_len > 0;
            type = slash ? '5' : '0';
            no_data = slash;
        }
        PyObject *entry = build(cls, &h, type);
        if (entry == NULL)
            goto fail;
        int appended = PyList_Append(list, entry);
        Py_DECREF(entry);
        if (appended < 0)
            goto fail;
        /* the next header: after the data and its padding, if all of it is in the buffer */
        const uint64_t rest = len - pos - BLOCK;
        const uint64_t data = no_data ? 0 : (uint64_t)h.size;
        if (data > rest)
            break;
        const uint64_t stored = data + (BLOCK - data % BLOCK) % BLOCK; /* data < 2**63 */
        if (stored > rest)
            break;
        pos += BLOCK + stored;
    }
    if (PyList_Reverse(list) < 0)
        goto fail;
    PyBuffer_Release(&view);
    return list;
fail:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef tarcore_methods[] = {
    {"header", (PyCFunction)(void (*)(void))tarcore_header, METH_FASTCALL, header_doc},
    {"headers", (PyCFunction)(void (*)(void))tarcore_headers, METH_FASTCALL, headers_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot tarcore_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef tarcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ocikit._tarcore",
    .m_doc = "Tar headers parsed in C, with the rules of ocikit.layer.tarstream.",
    .m_size = 0,
    .m_methods = tarcore_methods,
    .m_slots = tarcore_slots,
};

PyMODINIT_FUNC PyInit__tarcore(void)
{
    return PyModuleDef_Init(&tarcore_module);
}

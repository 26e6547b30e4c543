/* labelhaul._maskcore: the inner loops of the mask stage, in C (optional speed-up).
 *
 * labelhaul/maskcodec.py is the reference: every function here has a numpy twin there, and
 * the tests run both on the same inputs and compare the bytes. When this module did not
 * build (no C compiler at install time), maskcodec uses the twins; the output is the same.
 *
 *   unfilter(rows, height, stride, bpp) -> bool
 *       Undo the PNG row filters (None, Sub, Up, Average, Paeth) of `height` rows of
 *       `stride` bytes (filter byte first) in place. False on a filter byte over 4.
 *   find_runs(pixels, first, stride, height, width, wanted) -> (runs, instances)
 *       Cut 8-bit RGB rows into runs of one colour and keep the runs of the colours in
 *       `wanted` (sorted distinct uint32 keys r | g << 8 | b << 16). `runs`: bytes of int32
 *       (row, x0, x1) triples grouped by instance, row-major inside each; `instances`: a
 *       list of (index into wanted, first run, runs, y0, y1, x0, x1, area) in key order.
 *   encode_runs(runs, first, count, y0, y1, x0, x1, height, width) -> (scanlines, rle)
 *       One instance from its runs: the rows of its bbox as 1-bit PNG scanlines (filter
 *       byte 0, MSB first, rows padded with zero bits), and the COCO compressed RLE string
 *       of its full-size mask (column-major, as pycocotools' rleEncode + rleToString).
 *
 * Inputs come from untrusted PNG files, so every size is checked against the buffers it
 * indexes before a loop starts, and the loops never index outside what was checked.
 * The loops run without the GIL (the mask stage's download threads share a process).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- unfilter ---------------------------------------------------------------------- */

static inline uint8_t paeth(int a, int b, int c) {
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    if (pa <= pb && pa <= pc) return (uint8_t)a;
    if (pb <= pc) return (uint8_t)b;
    return (uint8_t)c;
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Average reads the byte `bpp` to the left as it comes out, so it goes a byte at a time;
 * but a mask is mostly black, and where the filtered bytes, the finished bytes to the left
 * and the row above are all zero, the output is zero too: those stretches are skipped 8
 * bytes at a time. (Sub and Paeth copy such stretches instead: `repeat_left`.) */
static inline int zero_block(const uint8_t *p, const uint8_t *prev, Py_ssize_t i,
                             Py_ssize_t n, Py_ssize_t bpp) {
    if (i + 8 > n || load64(p + i) != 0) return 0;
    for (Py_ssize_t k = i - bpp; k < i; k++)
        if (p[k] != 0 || prev[k] != 0) return 0;
    return load64(prev + i) == 0;
}

/* The end of the run of zero bytes of p that starts at i (p[i] == 0), at most n. */
static inline Py_ssize_t zero_end(const uint8_t *p, Py_ssize_t i, Py_ssize_t n) {
    Py_ssize_t e = i + 1;
    while (e + 8 <= n && load64(p + e) == 0) e += 8;
    while (e < n && p[e] == 0) e++;
    return e;
}

/* The end of the stretch [i, e) where up[k] == up[k - bpp]: i if there is none. */
static inline Py_ssize_t up_periodic_end(const uint8_t *up, Py_ssize_t i, Py_ssize_t e,
                                         Py_ssize_t bpp) {
    Py_ssize_t k = i;
    while (k + 8 <= e && load64(up + k) == load64(up + k - bpp)) k += 8;
    while (k < e && up[k] == up[k - bpp]) k++;
    return k;
}

/* p[k] = p[k - bpp] for k in [i, e) (i >= bpp), by copies that double: every copy's source
 * is finished bytes and does not overlap its destination. */
static inline void repeat_left(uint8_t *p, Py_ssize_t i, Py_ssize_t e, Py_ssize_t bpp) {
    Py_ssize_t done = 0, len = e - i;
    while (done < len) {
        Py_ssize_t chunk = done + bpp; /* a multiple of bpp: the pattern stays in phase */
        if (chunk > len - done) chunk = len - done;
        memcpy(p + i + done, p + i - bpp, (size_t)chunk);
        done += chunk;
    }
}

/* Returns 1, or 0 on a bad filter byte. `zero` is a row of `stride` zero bytes. */
static int unfilter_rows(uint8_t *base, Py_ssize_t h, Py_ssize_t stride, Py_ssize_t bpp,
                         const uint8_t *zero) {
    const Py_ssize_t n = stride - 1;
    const uint8_t *prev = zero;
    for (Py_ssize_t r = 0; r < h; r++) {
        uint8_t *row = base + r * stride;
        uint8_t *restrict p = row + 1;
        const uint8_t *restrict up = prev;
        Py_ssize_t i;
        switch (row[0]) {
        case 0:
            break;
        case 1:
            for (i = bpp; i < n;) {
                if (p[i] == 0) {
                    /* Zero filtered bytes repeat the finished byte bpp to the left. */
                    Py_ssize_t e = zero_end(p, i, n);
                    repeat_left(p, i, e, bpp);
                    i = e;
                    continue;
                }
                p[i] = (uint8_t)(p[i] + p[i - bpp]);
                i++;
            }
            break;
        case 2:
            for (i = 0; i < n; i++) p[i] = (uint8_t)(p[i] + up[i]);
            break;
        case 3:
            for (i = 0; i < bpp && i < n; i++) p[i] = (uint8_t)(p[i] + (up[i] >> 1));
            while (i < n) {
                if (zero_block(p, up, i, n, bpp)) {
                    i += 8;
                    continue;
                }
                p[i] = (uint8_t)(p[i] + ((p[i - bpp] + up[i]) >> 1));
                i++;
            }
            break;
        case 4:
            for (i = 0; i < bpp && i < n; i++) p[i] = (uint8_t)(p[i] + up[i]);
            while (i < n) {
                if (p[i] == 0) {
                    /* Where the row above repeats itself bpp to the left (b == c), Paeth
                     * predicts the byte to the left (a): zero filtered bytes repeat it. */
                    Py_ssize_t e = up_periodic_end(up, i, zero_end(p, i, n), bpp);
                    if (e > i) {
                        repeat_left(p, i, e, bpp);
                        i = e;
                        continue;
                    }
                }
                p[i] = (uint8_t)(p[i] + paeth(p[i - bpp], up[i], up[i - bpp]));
                i++;
            }
            break;
        default:
            return 0;
        }
        prev = p;
    }
    return 1;
}

static PyObject *py_unfilter(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer buf;
    Py_ssize_t h, stride, bpp;
    if (!PyArg_ParseTuple(args, "w*nnn", &buf, &h, &stride, &bpp)) return NULL;
    if (h < 0 || stride < 1 || bpp < 1 || bpp > 8 || (h > 0 && stride > buf.len / h)) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "unfilter: rows do not fit the buffer");
        return NULL;
    }
    uint8_t *zero = calloc((size_t)stride, 1);
    if (zero == NULL) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = unfilter_rows((uint8_t *)buf.buf, h, stride, bpp, zero);
    Py_END_ALLOW_THREADS
    free(zero);
    PyBuffer_Release(&buf);
    return PyBool_FromLong(ok);
}

/* ---- find_runs --------------------------------------------------------------------- */

typedef struct {
    int32_t inst, row, x0, x1;
} Run;

typedef struct {
    Run *items;
    size_t n, cap;
} Runs;

static int runs_push(Runs *rs, int32_t inst, int32_t row, int32_t x0, int32_t x1) {
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 1024;
        Run *items = realloc(rs->items, cap * sizeof(Run));
        if (items == NULL) return 0;
        rs->items = items;
        rs->cap = cap;
    }
    rs->items[rs->n++] = (Run){inst, row, x0, x1};
    return 1;
}

static inline uint32_t key_at(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
}

static Py_ssize_t find_key(const uint32_t *wanted, Py_ssize_t n, uint32_t key) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (wanted[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    return (lo < n && wanted[lo] == key) ? lo : -1;
}

/* Scan the rows; 0 when out of memory. */
static int scan_rows(const uint8_t *base, Py_ssize_t stride, Py_ssize_t h, Py_ssize_t w,
                     const uint32_t *wanted, Py_ssize_t nwanted, Runs *out) {
    const Py_ssize_t nbytes = 3 * w;
    for (Py_ssize_t r = 0; r < h; r++) {
        const uint8_t *p = base + r * stride;
        Py_ssize_t i = 0;
        while (i < nbytes) {
            /* Black background: skip it 8 bytes at a time. */
            uint64_t word;
            while (i + 8 <= nbytes) {
                memcpy(&word, p + i, 8);
                if (word != 0) break;
                i += 8;
            }
            while (i < nbytes && p[i] == 0) i++;
            if (i >= nbytes) break;
            Py_ssize_t x = i / 3; /* every pixel before x is black */
            uint32_t key = key_at(p + 3 * x);
            Py_ssize_t x1 = x + 1;
            /* Inside a run: where bytes 3*x1 .. +8 equal the 8 bytes one pixel before,
             * pixels x1 and x1 + 1 have the key of x1 - 1 (x1 + 2 < w keeps the 8 bytes
             * inside the row). */
            while (x1 + 2 < w && load64(p + 3 * x1) == load64(p + 3 * x1 - 3)) x1 += 2;
            while (x1 < w && key_at(p + 3 * x1) == key) x1++;
            if (key != 0) {
                Py_ssize_t k = find_key(wanted, nwanted, key);
                if (k >= 0 && !runs_push(out, (int32_t)k, (int32_t)r, (int32_t)x, (int32_t)x1))
                    return 0;
            }
            i = 3 * x1;
        }
    }
    return 1;
}

static PyObject *py_find_runs(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer pix, want;
    Py_ssize_t first, stride, h, w;
    if (!PyArg_ParseTuple(args, "y*nnnny*", &pix, &first, &stride, &h, &w, &want)) return NULL;
    PyObject *result = NULL;
    Runs rs = {NULL, 0, 0};
    Py_ssize_t nwanted = want.len / (Py_ssize_t)sizeof(uint32_t);
    /* Row r's pixels are bytes first + r * stride .. + 3 * width - 1: all inside `pixels`.
     * Every factor is at most 2^31, so the end fits in 64 bits. */
    if (first < 0 || stride < 0 || stride > INT32_MAX || h < 0 || h > INT32_MAX || w < 0 ||
        w > INT32_MAX / 3 || (w > 0 && stride < 3 * w) ||
        want.len % (Py_ssize_t)sizeof(uint32_t) != 0 ||
        (h > 0 && w > 0 &&
         (long long)first + (long long)(h - 1) * stride + 3LL * w > (long long)pix.len)) {
        PyErr_SetString(PyExc_ValueError, "find_runs: rows do not fit the buffer");
        goto done;
    }
    const uint32_t *wanted = (const uint32_t *)want.buf;
    for (Py_ssize_t k = 1; k < nwanted; k++) {
        if (wanted[k - 1] >= wanted[k]) {
            PyErr_SetString(PyExc_ValueError, "find_runs: wanted keys must be sorted and distinct");
            goto done;
        }
    }
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = h == 0 || w == 0 || nwanted == 0 ||
         scan_rows((const uint8_t *)pix.buf + first, stride, h, w, wanted, nwanted, &rs);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_NoMemory();
        goto done;
    }
    /* Group by instance (a counting sort keeps each instance's runs row-major). */
    size_t *start = calloc((size_t)nwanted + 1, sizeof(size_t));
    if (start == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t j = 0; j < rs.n; j++) start[rs.items[j].inst + 1]++;
    for (Py_ssize_t k = 0; k < nwanted; k++) start[k + 1] += start[k];
    PyObject *runs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(rs.n * 3 * sizeof(int32_t)));
    PyObject *insts = PyList_New(0);
    if (runs == NULL || insts == NULL) {
        Py_XDECREF(runs);
        Py_XDECREF(insts);
        free(start);
        goto done;
    }
    int32_t *dst = (int32_t *)PyBytes_AS_STRING(runs);
    size_t *fill = malloc(((size_t)nwanted + 1) * sizeof(size_t));
    if (fill == NULL) {
        Py_DECREF(runs);
        Py_DECREF(insts);
        free(start);
        PyErr_NoMemory();
        goto done;
    }
    memcpy(fill, start, ((size_t)nwanted + 1) * sizeof(size_t));
    for (size_t j = 0; j < rs.n; j++) {
        const Run *run = &rs.items[j];
        int32_t *slot = dst + 3 * fill[run->inst]++;
        slot[0] = run->row;
        slot[1] = run->x0;
        slot[2] = run->x1;
    }
    free(fill);
    for (Py_ssize_t k = 0; k < nwanted; k++) {
        size_t a = start[k], b = start[k + 1];
        if (a == b) continue;
        int32_t y0 = dst[3 * a], y1 = dst[3 * (b - 1)] + 1, x0 = INT32_MAX, x1 = 0;
        long long area = 0;
        for (size_t j = a; j < b; j++) {
            const int32_t *s = dst + 3 * j;
            if (s[1] < x0) x0 = s[1];
            if (s[2] > x1) x1 = s[2];
            area += s[2] - s[1];
        }
        PyObject *item = Py_BuildValue("(nnniiiiL)", k, (Py_ssize_t)a, (Py_ssize_t)(b - a), y0,
                                       y1, x0, x1, area);
        if (item == NULL || PyList_Append(insts, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(runs);
            Py_DECREF(insts);
            free(start);
            goto done;
        }
        Py_DECREF(item);
    }
    free(start);
    result = Py_BuildValue("(NN)", runs, insts);
done:
    free(rs.items);
    PyBuffer_Release(&pix);
    PyBuffer_Release(&want);
    return result;
}

/* ---- encode_runs ------------------------------------------------------------------- */

typedef struct {
    long long *items;
    size_t n, cap;
} Counts;

static int counts_push(Counts *cs, long long v) {
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 256;
        long long *items = realloc(cs->items, cap * sizeof(long long));
        if (items == NULL) return 0;
        cs->items = items;
        cs->cap = cap;
    }
    cs->items[cs->n++] = v;
    return 1;
}

/* pycocotools' rleToString: 5-bit groups + 48, 0x20 on all but a value's last group,
 * each count after the second taken relative to the count two before it. */
static size_t rle_chars(const long long *cnts, size_t m, char *out) {
    size_t p = 0;
    for (size_t i = 0; i < m; i++) {
        long long x = cnts[i];
        if (i > 2) x -= cnts[i - 2];
        int more = 1;
        while (more) {
            long long c = x & 0x1f;
            x = x < 0 ? ~((~x) >> 5) : x >> 5; /* floor(x / 32), on any compiler */
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            out[p++] = (char)(c + 48);
        }
    }
    return p;
}

static PyObject *py_encode_runs(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer rb;
    Py_ssize_t first, count, y0, y1, x0, x1, height, width;
    if (!PyArg_ParseTuple(args, "y*nnnnnnnn", &rb, &first, &count, &y0, &y1, &x0, &x1, &height,
                          &width))
        return NULL;
    PyObject *result = NULL, *scan = NULL;
    Counts cs = {NULL, 0, 0};
    char *text = NULL;
    const Py_ssize_t nruns = rb.len / (Py_ssize_t)(3 * sizeof(int32_t));
    const Py_ssize_t h = y1 - y0, w = x1 - x0;
    if (first < 0 || count < 1 || first > nruns || count > nruns - first || y0 < 0 || x0 < 0 ||
        h < 1 || w < 1 || y1 > height || x1 > width || height > INT32_MAX ||
        width > INT32_MAX || (w > PY_SSIZE_T_MAX / h)) {
        PyErr_SetString(PyExc_ValueError, "encode_runs: bad instance geometry");
        goto done;
    }
    const int32_t *runs = (const int32_t *)rb.buf + 3 * first;
    for (Py_ssize_t j = 0; j < count; j++) {
        const int32_t *s = runs + 3 * j;
        if (s[0] < y0 || s[0] >= y1 || s[1] < x0 || s[2] > x1 || s[1] >= s[2]) {
            PyErr_SetString(PyExc_ValueError, "encode_runs: a run outside the instance's bbox");
            goto done;
        }
    }
    const Py_ssize_t rowbytes = 1 + (w + 7) / 8;
    if (h > PY_SSIZE_T_MAX / rowbytes) {
        PyErr_SetString(PyExc_ValueError, "encode_runs: bad instance geometry");
        goto done;
    }
    scan = PyBytes_FromStringAndSize(NULL, h * rowbytes);
    if (scan == NULL) goto done;
    /* Per column, the rows where the mask changes (from the row above, with zero rows
     * above and below the bbox): counted, then laid out column by column. */
    size_t *slot = calloc((size_t)w + 1, sizeof(size_t));
    if (slot == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *bits = (uint8_t *)PyBytes_AS_STRING(scan);
    int ok = 1;
    size_t nchars = 0;
    int32_t *changes = NULL;
    Py_BEGIN_ALLOW_THREADS
    memset(bits, 0, (size_t)(h * rowbytes));
    for (Py_ssize_t j = 0; j < count; j++) {
        const int32_t *s = runs + 3 * j;
        const Py_ssize_t a = s[1] - x0, b = s[2] - x0;
        uint8_t *row = bits + (s[0] - y0) * rowbytes + 1;
        Py_ssize_t lo = a >> 3, hi = (b - 1) >> 3;
        uint8_t head = (uint8_t)(0xFF >> (a & 7)), tail = (uint8_t)(0xFF << (7 - ((b - 1) & 7)));
        if (lo == hi) {
            row[lo] |= (uint8_t)(head & tail);
        } else {
            row[lo] |= head;
            if (hi > lo + 1) memset(row + lo + 1, 0xFF, (size_t)(hi - lo - 1));
            row[hi] |= tail;
        }
    }
    const Py_ssize_t nb = rowbytes - 1;
    /* Two passes over the XOR of each row with the row above: count, then place. */
    for (int pass = 0; pass < 2 && ok; pass++) {
        for (Py_ssize_t r = 0; r <= h; r++) {
            const uint8_t *cur = r < h ? bits + r * rowbytes + 1 : NULL;
            const uint8_t *above = r > 0 ? bits + (r - 1) * rowbytes + 1 : NULL;
            for (Py_ssize_t k = 0; k < nb; k++) {
                unsigned x = (unsigned)(cur ? cur[k] : 0) ^ (unsigned)(above ? above[k] : 0);
                while (x) {
                    int bit = 31 - __builtin_clz(x); /* 7 is the byte's first column */
                    x &= ~(1u << bit);
                    Py_ssize_t c = k * 8 + (7 - bit);
                    if (pass == 0) slot[c + 1]++;
                    else changes[slot[c]++] = (int32_t)r;
                }
            }
        }
        if (pass == 0) {
            for (Py_ssize_t c = 0; c < w; c++) slot[c + 1] += slot[c];
            changes = malloc((slot[w] ? slot[w] : 1) * sizeof(int32_t));
            ok = changes != NULL;
        }
    }
    /* After the second pass slot[c] is where column c + 1's changes start. Column-major runs
     * of the full image: a column's runs in the crop, offset by where the column starts; one
     * that ends at the column's foot and one that starts at the next column's head are one
     * run (only when the bbox is the image's full height). */
    const long long H = height, total = (long long)height * width;
    long long last = 0, ps = -1, pe = -1;
    size_t from = 0;
    for (Py_ssize_t c = 0; c < w && ok; c++) {
        const long long base = (long long)(x0 + c) * H + y0;
        for (size_t q = from; q + 1 < slot[c] && ok; q += 2) {
            long long s = base + changes[q], t = base + changes[q + 1];
            if (s == pe) {
                pe = t;
            } else {
                if (ps >= 0) {
                    ok = counts_push(&cs, ps - last) && counts_push(&cs, pe - ps);
                    last = pe;
                }
                ps = s;
                pe = t;
            }
        }
        from = slot[c];
    }
    if (ok && ps >= 0) ok = counts_push(&cs, ps - last) && counts_push(&cs, pe - ps);
    if (ok && pe < total) ok = counts_push(&cs, total - pe);
    free(changes);
    free(slot);
    if (ok) {
        text = malloc(cs.n * 13 + 1); /* a 64-bit value takes at most 13 groups */
        ok = text != NULL;
    }
    if (ok) nchars = rle_chars(cs.items, cs.n, text);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_BuildValue("(Oy#)", scan, text, (Py_ssize_t)nchars);
done:
    Py_XDECREF(scan);
    free(cs.items);
    free(text);
    PyBuffer_Release(&rb);
    return result;
}

static PyMethodDef methods[] = {
    {"unfilter", py_unfilter, METH_VARARGS, "Undo PNG row filters in place; False on a bad one."},
    {"find_runs", py_find_runs, METH_VARARGS, "Runs of wanted colours in 8-bit RGB rows."},
    {"encode_runs", py_encode_runs, METH_VARARGS, "1-bit PNG scanlines and COCO RLE of one instance."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "labelhaul._maskcore",
    .m_doc = "The mask stage's inner loops in C (labelhaul/maskcodec.py has their numpy twins).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__maskcore(void) { return PyModule_Create(&module); }

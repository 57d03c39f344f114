/*
 * hitl_sip.media._rtpcore — the relayed per-packet path of a bridged G.711 call, in C.
 *
 * In Python each packet of the trunk's cost 90-100 us of a core on the relay thread
 * (bench/README.md, "The C core"): most of it the interpreter's cold start on every
 * packet, not the work. Here a packet of the trunk's is read, checked, sent to the
 * agent's WebRTC leg (SRTP) and forwarded to pjmedia without the interpreter:
 *
 *   Core     the relay thread's epoll loop. run() is called once from a Python thread
 *            and keeps the GIL released; descriptors added with add_python() go to the
 *            Python dispatcher (with the GIL), those added with add_relay() are served
 *            here (a relay's trunk-facing RTP socket).
 *   Inbound  the stream pjmedia hears from a relay: the primer's SSRC and numbering
 *            carried on through the trunk's packets (relay.py, InboundStream).
 *   Sender   one G.711 WebRTC leg's outgoing RTP: a header template, sequence and
 *            timestamp, SRTP with the session pylibsrtp keyed (its srtp_protect and
 *            srtp_t, given as addresses), and the candidate pair's socket (a dup).
 *   Relay    one call's trunk socket: strict source, the agent's packet on the Sender
 *            it was armed with, the renumbered copy to pjmedia. Whether a packet may go
 *            to the agent from here is Python's decision (worker/service.py): a packet
 *            the relay is not armed for goes to the Python callback, whose verdict arms
 *            it for LEASE packets; the session disarms it whenever that decision may
 *            change (state, agent, taps, legs).
 *   TrunkOut everything the trunk gets from a relay, one stream: pjmedia's packets (the
 *            relay thread) and the agent's frames (the loop), one SSRC and numbering.
 *   Receiver one G.711 WebRTC leg's incoming SRTP, on the event loop: checked, decoded,
 *            and sent on to the trunk as it came when the session names a TrunkOut
 *            (the agent heard alone).
 *
 * Locks: a Python thread never blocks on one of these mutexes holding the GIL
 * (lock_py releases it while waiting); the relay thread takes core -> relay -> sender /
 * inbound (a TrunkOut's alone, briefly, for the trunk's address) and takes the GIL only with none of them held but the core's, which it drops
 * before running Python code.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PACKET 2048
#define SRTP_TRAILER 64     /* room for the authentication tag (and an MKI) */
#define MAX_HEADER 128
#define FRAME 160           /* samples of a 20 ms G.711 frame */
#define GAP 0.06            /* a pause this long: the timestamp takes the time passed */
#define LEASE 50            /* packets a verdict of Python's holds for (1 s) */

enum { MODE_PYTHON = 0, MODE_AGENT = 1, MODE_NOBODY = 2 };

typedef int (*srtp_fn)(void *ctx, void *buf, int *len);

static void lock_py(pthread_mutex_t *m) {
    if (pthread_mutex_trylock(m) == 0)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(m);
    Py_END_ALLOW_THREADS
}

static double monotonic(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int parse_addr(PyObject *addr, struct sockaddr_storage *out, socklen_t *len) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(addr, "si", &host, &port))
        return -1;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "not a numeric address: %s", host);
    return -1;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port
            && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return 0;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = (v >> 16) & 0xff; p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

/* Where an RTP packet's payload lies (hitl_sip.media.rtp.payload_bounds): start >= end
 * for a packet without one or one RtpPacket.parse refuses. */
static void payload_bounds(const uint8_t *d, size_t size, size_t *start, size_t *end) {
    *start = *end = 0;
    if (size < 12 || d[0] >> 6 != 2)
        return;
    size_t s = 12 + 4 * (size_t)(d[0] & 0x0f);
    if (d[0] & 0x10) {
        if (size < s + 4)
            return;
        s += 4 + 4 * (size_t)get16(d + s + 2);
    }
    size_t e = size;
    if (d[0] & 0x20) {
        uint8_t padding = d[size - 1];
        if (padding == 0 || s > size || padding > size - s)
            return;
        e -= padding;
    }
    *start = s;
    *end = e;
}

/* -- Sender ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    srtp_fn protect;
    void *ctx;
    PyObject *session;              /* pylibsrtp's Session: keeps ctx alive */
    uint8_t header[MAX_HEADER];
    Py_ssize_t header_len;
    uint16_t seq;
    uint32_t ts;
    double sent_at;                 /* 0: nothing sent yet */
    int own_pt;
    int other_pt;                   /* the other law's payload type, or -1 */
    uint8_t other[256];             /* its bytes -> ours */
    int fd;                         /* ours (a dup), or -1 */
    struct sockaddr_storage dest;
    socklen_t dest_len;
    int closed;
    unsigned long long sent, failed;
    unsigned long long relayed;     /* of those sent, the relay core's */
} Sender;

/* One payload in the leg's law to the agent; the caller holds s->lock. */
static void sender_out(Sender *s, const uint8_t *payload, size_t n) {
    if (s->closed || s->fd < 0 || n > MAX_PACKET)
        return;
    uint8_t buf[MAX_HEADER + MAX_PACKET + SRTP_TRAILER];
    double now = monotonic();
    uint32_t step = FRAME;
    if (s->sent_at > 0 && now - s->sent_at > GAP)
        step = FRAME * (uint32_t)((now - s->sent_at) / 0.02 + 0.5);
    s->sent_at = now;
    s->seq = (uint16_t)(s->seq + 1);
    s->ts += step;
    memcpy(buf, s->header, (size_t)s->header_len);
    put16(buf + 2, s->seq);
    put32(buf + 4, s->ts);
    memcpy(buf + s->header_len, payload, n);
    int len = (int)(s->header_len + (Py_ssize_t)n);
    if (s->protect(s->ctx, buf, &len) != 0) {
        s->failed++;
        return;
    }
    if (sendto(s->fd, buf, (size_t)len, 0, (struct sockaddr *)&s->dest, s->dest_len) < 0) {
        s->failed++;
        return;
    }
    s->sent++;
}

/* A trunk packet's payload (payload type pt) to the agent; the caller holds s->lock. */
static void sender_payload(Sender *s, int pt, const uint8_t *payload, size_t n) {
    if (pt == s->own_pt) {
        sender_out(s, payload, n);
        return;
    }
    if (pt != s->other_pt || n > MAX_PACKET)
        return;
    uint8_t mapped[MAX_PACKET];
    for (size_t i = 0; i < n; i++)
        mapped[i] = s->other[payload[i]];
    sender_out(s, mapped, n);
}

static int Sender_init(Sender *s, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"protect", "ctx", "session", "header", "payload_type",
                         "other_payload_type", "other_table", NULL};
    unsigned long long protect, ctx;
    PyObject *session;
    Py_buffer header, table;
    int own, other;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKOy*iiy*", kw, &protect, &ctx, &session,
                                     &header, &own, &other, &table))
        return -1;
    int ok = header.len >= 12 && header.len <= MAX_HEADER && table.len == 256;
    if (ok) {
        memcpy(s->header, header.buf, (size_t)header.len);
        s->header_len = header.len;
        memcpy(s->other, table.buf, 256);
    }
    PyBuffer_Release(&header);
    PyBuffer_Release(&table);
    if (!ok || !protect || !ctx) {
        PyErr_SetString(PyExc_ValueError, "Sender: a 12-128 byte header, a 256-byte table "
                                          "and SRTP's function and context");
        return -1;
    }
    s->protect = (srtp_fn)(uintptr_t)protect;
    s->ctx = (void *)(uintptr_t)ctx;
    Py_INCREF(session);
    Py_XSETREF(s->session, session);
    s->seq = get16(s->header + 2);
    s->ts = get32(s->header + 4);
    s->own_pt = own;
    s->other_pt = other;
    return 0;
}

static PyObject *Sender_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Sender *s = (Sender *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->fd = -1;
    s->other_pt = -1;
    return (PyObject *)s;
}

static void Sender_dealloc(Sender *s) {
    if (s->fd >= 0)
        close(s->fd);
    Py_XDECREF(s->session);
    pthread_mutex_destroy(&s->lock);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *Sender_set_dest(Sender *s, PyObject *args) {
    int fd;
    PyObject *addr;
    if (!PyArg_ParseTuple(args, "iO", &fd, &addr))
        return NULL;
    struct sockaddr_storage dest;
    socklen_t len = 0;
    if (parse_addr(addr, &dest, &len) < 0)
        return NULL;
    int copy = dup(fd);
    if (copy < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    lock_py(&s->lock);
    int old = s->fd;
    s->fd = copy;
    s->dest = dest;
    s->dest_len = len;
    pthread_mutex_unlock(&s->lock);
    if (old >= 0)
        close(old);
    Py_RETURN_NONE;
}

static PyObject *Sender_send(Sender *s, PyObject *arg) {
    Py_buffer payload;
    if (PyObject_GetBuffer(arg, &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    lock_py(&s->lock);
    sender_out(s, payload.buf, (size_t)payload.len);
    pthread_mutex_unlock(&s->lock);
    PyBuffer_Release(&payload);
    Py_RETURN_NONE;
}

static PyObject *Sender_send_payload(Sender *s, PyObject *args) {
    int pt;
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "iy*", &pt, &payload))
        return NULL;
    lock_py(&s->lock);
    sender_payload(s, pt, payload.buf, (size_t)payload.len);
    pthread_mutex_unlock(&s->lock);
    PyBuffer_Release(&payload);
    Py_RETURN_NONE;
}

static PyObject *Sender_close(Sender *s, PyObject *unused) {
    lock_py(&s->lock);
    s->closed = 1;
    int old = s->fd;
    s->fd = -1;
    pthread_mutex_unlock(&s->lock);
    if (old >= 0)
        close(old);
    Py_RETURN_NONE;
}

static PyObject *Sender_get_closed(Sender *s, void *c) { return PyBool_FromLong(s->closed); }
static PyMethodDef Sender_methods[] = {
    {"set_dest", (PyCFunction)Sender_set_dest, METH_VARARGS,
     "set_dest(fd, (host, port)): send on a dup of fd to that address from now"},
    {"send", (PyCFunction)Sender_send, METH_O, "send(payload): one packet in the leg's law"},
    {"send_payload", (PyCFunction)Sender_send_payload, METH_VARARGS,
     "send_payload(pt, payload): a trunk packet's G.711 payload (either law)"},
    {"close", (PyCFunction)Sender_close, METH_NOARGS, "send nothing more; close the dup"},
    {NULL}};

static PyGetSetDef Sender_getset[] = {{"closed", (getter)Sender_get_closed, NULL, NULL, NULL},
                                      {NULL}};

static PyMemberDef Sender_members[] = {
    {"sent", T_ULONGLONG, offsetof(Sender, sent), READONLY, "packets sent"},
    {"failed", T_ULONGLONG, offsetof(Sender, failed), READONLY,
     "packets SRTP or the socket refused"},
    {"relayed", T_ULONGLONG, offsetof(Sender, relayed), READONLY,
     "trunk payloads the relay core sent"},
    {NULL}};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hitl_sip.media._rtpcore.Sender",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sender(protect, ctx, session, header, payload_type, other_payload_type, "
              "other_table): a G.711 WebRTC leg's outgoing SRTP",
    .tp_new = Sender_new,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_methods = Sender_methods,
    .tp_getset = Sender_getset,
    .tp_members = Sender_members,
};

/* -- Inbound ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    uint32_t ssrc;
    uint16_t seq;       /* the last sequence number pjmedia got */
    uint32_t ts;        /* ... and its timestamp */
    double at;          /* when it was sent; 0: never */
    int has_peer;
    uint32_t peer;      /* the trunk's current SSRC */
    uint16_t seq_off;   /* ours minus the trunk's, for its current SSRC */
    uint32_t ts_off;
} Inbound;

static int Inbound_init(Inbound *in, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"ssrc", "seq", "ts", NULL};
    unsigned int ssrc, seq, ts;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "III", kw, &ssrc, &seq, &ts))
        return -1;
    in->ssrc = ssrc;
    in->seq = (uint16_t)seq;
    in->ts = ts;
    return 0;
}

static PyObject *Inbound_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Inbound *in = (Inbound *)type->tp_alloc(type, 0);
    if (in != NULL)
        pthread_mutex_init(&in->lock, NULL);
    return (PyObject *)in;
}

static void Inbound_dealloc(Inbound *in) {
    pthread_mutex_destroy(&in->lock);
    Py_TYPE(in)->tp_free((PyObject *)in);
}

/* A trunk packet (12 bytes at least) as pjmedia gets it, into out (n bytes). */
static void inbound_renumber(Inbound *in, const uint8_t *d, size_t n, uint8_t *out) {
    uint16_t seq = get16(d + 2);
    uint32_t ts = get32(d + 4), ssrc = get32(d + 8);
    pthread_mutex_lock(&in->lock);
    double now = monotonic();
    if (!in->has_peer || ssrc != in->peer) {  /* the trunk's first packet, or a new SSRC */
        in->has_peer = 1;
        in->peer = ssrc;
        uint32_t step = FRAME;
        if (in->at > 0) {  /* the time since our last, in 20 ms frames */
            double frames = (now - in->at) / 0.02;
            long r = (long)(frames + 0.5);
            step *= (uint32_t)(r < 1 ? 1 : r);
        }
        in->seq_off = (uint16_t)(in->seq + 1 - seq);
        in->ts_off = in->ts + step - ts;
    }
    uint16_t out_seq = (uint16_t)(seq + in->seq_off);
    uint32_t out_ts = ts + in->ts_off;
    if ((uint16_t)(out_seq - in->seq) < 0x8000) {  /* newer: where a switch goes on */
        in->seq = out_seq;
        in->ts = out_ts;
        in->at = now;
    }
    uint32_t ours = in->ssrc;
    pthread_mutex_unlock(&in->lock);
    memcpy(out, d, n);
    put16(out + 2, out_seq);
    put32(out + 4, out_ts);
    put32(out + 8, ours);
}

static PyObject *Inbound_renumber(Inbound *in, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (data.len < 12 || data.len > MAX_PACKET) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "an RTP packet of 12 to 2048 bytes");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, data.len);
    if (out != NULL)
        inbound_renumber(in, data.buf, (size_t)data.len, (uint8_t *)PyBytes_AS_STRING(out));
    PyBuffer_Release(&data);
    return out;
}

static PyObject *Inbound_next(Inbound *in, PyObject *args) {
    int pt;
    unsigned int step;
    if (!PyArg_ParseTuple(args, "iI", &pt, &step))
        return NULL;
    uint8_t h[12];
    lock_py(&in->lock);
    in->seq = (uint16_t)(in->seq + step);
    if (in->at > 0)
        in->ts += FRAME;
    in->at = monotonic();
    h[0] = 0x80;
    h[1] = (uint8_t)(pt & 0x7f);
    put16(h + 2, in->seq);
    put32(h + 4, in->ts);
    put32(h + 8, in->ssrc);
    pthread_mutex_unlock(&in->lock);
    return PyBytes_FromStringAndSize((const char *)h, 12);
}

static PyObject *Inbound_peer(Inbound *in, PyObject *unused) {
    lock_py(&in->lock);
    int has = in->has_peer;
    uint32_t peer = in->peer;
    uint16_t off = in->seq_off;
    pthread_mutex_unlock(&in->lock);
    if (!has)
        return Py_BuildValue("(OI)", Py_None, (unsigned int)off);
    return Py_BuildValue("(II)", (unsigned int)peer, (unsigned int)off);
}


static PyMethodDef Inbound_methods[] = {
    {"renumber", (PyCFunction)Inbound_renumber, METH_O,
     "renumber(packet): a trunk packet as pjmedia gets it"},
    {"_next", (PyCFunction)Inbound_next, METH_VARARGS,
     "_next(pt, step): a primer header, the sequence advanced by step"},
    {"peer", (PyCFunction)Inbound_peer, METH_NOARGS,
     "peer() -> (the trunk's SSRC or None, the sequence offset)"},
    {NULL}};

static PyMemberDef Inbound_members[] = {
    {"ssrc", T_UINT, offsetof(Inbound, ssrc), READONLY, "the SSRC pjmedia hears"}, {NULL}};

static PyTypeObject InboundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hitl_sip.media._rtpcore.Inbound",
    .tp_basicsize = sizeof(Inbound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Inbound(ssrc, seq, ts): the stream pjmedia hears from a relay",
    .tp_new = Inbound_new,
    .tp_init = (initproc)Inbound_init,
    .tp_dealloc = (destructor)Inbound_dealloc,
    .tp_methods = Inbound_methods,
    .tp_members = Inbound_members,
};

/* -- TrunkOut ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    int fd;                         /* the relay's trunk-facing RTP socket (Python owns it) */
    struct sockaddr_storage trunk;
    socklen_t trunk_len;
    int law;                        /* the trunk's G.711 payload type, from pjmedia's; -1 */
    uint32_t ssrc;
    uint16_t seq;                   /* the last sequence number we sent */
    uint32_t ts;                    /* the timestamp of the last packet we sent */
    int sent;                       /* the agent's frames have gone out from here */
    int has_pj_ts;
    uint32_t pj_ts;                 /* pjmedia's last timestamp (for its steps) */
    double agent_at;                /* the agent's last frame (CLOCK_MONOTONIC) */
    double handback;
    unsigned long long from_agent;
} TrunkOut;

static PyObject *TrunkOut_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    TrunkOut *o = (TrunkOut *)type->tp_alloc(type, 0);
    if (o != NULL) {
        pthread_mutex_init(&o->lock, NULL);
        o->law = -1;
        o->fd = -1;
    }
    return (PyObject *)o;
}

static int TrunkOut_init(TrunkOut *o, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"fd", "trunk", "handback", NULL};
    PyObject *trunk;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOd", kw, &o->fd, &trunk, &o->handback))
        return -1;
    return parse_addr(trunk, &o->trunk, &o->trunk_len);
}

static void TrunkOut_dealloc(TrunkOut *o) {
    pthread_mutex_destroy(&o->lock);
    Py_TYPE(o)->tp_free((PyObject *)o);
}

/* One G.711 payload of the agent's in the trunk's law, now; o->lock held. */
static int trunkout_send(TrunkOut *o, const uint8_t *payload, size_t n) {
    if (o->law < 0 || !o->ssrc || n > MAX_PACKET)
        return 0;  /* pjmedia has not sent yet: its path carries the frame */
    uint8_t buf[12 + MAX_PACKET];
    o->sent = 1;
    o->agent_at = monotonic();
    o->seq = (uint16_t)(o->seq + 1);
    o->ts += (uint32_t)n;
    buf[0] = 0x80;
    buf[1] = (uint8_t)o->law;
    put16(buf + 2, o->seq);
    put32(buf + 4, o->ts);
    put32(buf + 8, o->ssrc);
    memcpy(buf + 12, payload, n);
    sendto(o->fd, buf, 12 + n, 0, (struct sockaddr *)&o->trunk, o->trunk_len);
    o->from_agent++;
    return 1;
}

static PyObject *TrunkOut_send(TrunkOut *o, PyObject *arg) {
    Py_buffer payload;
    if (PyObject_GetBuffer(arg, &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    lock_py(&o->lock);
    int sent = trunkout_send(o, payload.buf, (size_t)payload.len);
    pthread_mutex_unlock(&o->lock);
    PyBuffer_Release(&payload);
    return PyBool_FromLong(sent);
}

static PyObject *TrunkOut_pjmedia(TrunkOut *o, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *d = data.buf;
    size_t n = (size_t)data.len;
    if (n < 12 || n > MAX_PACKET) {
        PyBuffer_Release(&data);
        Py_RETURN_FALSE;
    }
    int pt = d[1] & 0x7f, out = 1;
    uint16_t seq = get16(d + 2);
    uint32_t ts = get32(d + 4), ssrc = get32(d + 8);
    uint8_t buf[MAX_PACKET];
    lock_py(&o->lock);
    if (pt == 0 || pt == 8)
        o->law = pt;
    uint32_t step = o->has_pj_ts ? ts - o->pj_ts : 0;
    o->pj_ts = ts;
    o->has_pj_ts = 1;
    memcpy(buf, d, n);
    if (!o->sent) {  /* pjmedia's numbering until we first send ourselves */
        o->ssrc = ssrc;
        o->seq = seq;
        o->ts = ts;
    } else if (monotonic() - o->agent_at < o->handback) {
        out = 0;  /* the agent's frames go out instead */
    } else {  /* pjmedia again (hold audio, the bot, DTMF): our SSRC, sequence, clock */
        o->seq = (uint16_t)(o->seq + 1);
        if (pt != 101 || step)  /* an RFC 4733 event's packets share one timestamp */
            o->ts += step ? step : FRAME;
        /* (audio: no marker — pjmedia's after a cut would mark a talkspurt that is none
         * to the trunk; an event's marker is its start and is kept) */
        buf[1] = pt == 101 ? d[1] : (uint8_t)pt;
        put16(buf + 2, o->seq);
        put32(buf + 4, o->ts);
        put32(buf + 8, o->ssrc);
    }
    if (out)
        sendto(o->fd, buf, n, 0, (struct sockaddr *)&o->trunk, o->trunk_len);
    pthread_mutex_unlock(&o->lock);
    PyBuffer_Release(&data);
    return PyBool_FromLong(out);
}

static PyObject *TrunkOut_follow_pjmedia(TrunkOut *o, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (data.len >= 12) {
        lock_py(&o->lock);
        o->pj_ts = get32((const uint8_t *)data.buf + 4);
        o->has_pj_ts = 1;
        pthread_mutex_unlock(&o->lock);
    }
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

static PyObject *TrunkOut_forget_pjmedia(TrunkOut *o, PyObject *unused) {
    lock_py(&o->lock);
    o->has_pj_ts = 0;
    pthread_mutex_unlock(&o->lock);
    Py_RETURN_NONE;
}

static PyObject *TrunkOut_set_trunk(TrunkOut *o, PyObject *addr) {
    struct sockaddr_storage a;
    socklen_t len;
    if (parse_addr(addr, &a, &len) < 0)
        return NULL;
    lock_py(&o->lock);
    o->trunk = a;
    o->trunk_len = len;
    pthread_mutex_unlock(&o->lock);
    Py_RETURN_NONE;
}

static PyObject *TrunkOut_get_started(TrunkOut *o, void *c) {
    return PyBool_FromLong(o->sent || o->has_pj_ts);
}
static PyMethodDef TrunkOut_methods[] = {
    {"send", (PyCFunction)TrunkOut_send, METH_O,
     "send(payload) -> bool: an agent's frame in the trunk's law, now (False: pjmedia has "
     "not sent yet, its path carries it)"},
    {"pjmedia", (PyCFunction)TrunkOut_pjmedia, METH_O,
     "pjmedia(packet) -> bool: one of pjmedia's packets to the trunk, in our numbering "
     "(False: dropped, the agent's frames go out)"},
    {"follow_pjmedia", (PyCFunction)TrunkOut_follow_pjmedia, METH_O,
     "follow_pjmedia(packet): a packet of pjmedia's not sent: its clock followed"},
    {"forget_pjmedia", (PyCFunction)TrunkOut_forget_pjmedia, METH_NOARGS,
     "pjmedia's next packet is the next frame (what a full buffer kept is old)"},
    {"set_trunk", (PyCFunction)TrunkOut_set_trunk, METH_O, "set_trunk((host, port))"},
    {NULL}};

static PyGetSetDef TrunkOut_getset[] = {
    {"started", (getter)TrunkOut_get_started, NULL, "pjmedia or the agent has sent", NULL},
    {NULL}};

static PyMemberDef TrunkOut_members[] = {
    {"law", T_INT, offsetof(TrunkOut, law), READONLY,
     "the trunk's G.711 payload type, -1: unknown"},
    {"ssrc", T_UINT, offsetof(TrunkOut, ssrc), READONLY, NULL},
    {"agent_at", T_DOUBLE, offsetof(TrunkOut, agent_at), READONLY,
     "time.monotonic() of the agent's last frame"},
    {"from_agent", T_ULONGLONG, offsetof(TrunkOut, from_agent), READONLY, "agent frames sent"},
    {NULL}};

static PyTypeObject TrunkOutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hitl_sip.media._rtpcore.TrunkOut",
    .tp_basicsize = sizeof(TrunkOut),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TrunkOut(fd, trunk, handback): one stream to the trunk, pjmedia's packets and "
              "the agent's frames",
    .tp_new = TrunkOut_new,
    .tp_init = (initproc)TrunkOut_init,
    .tp_dealloc = (destructor)TrunkOut_dealloc,
    .tp_methods = TrunkOut_methods,
    .tp_getset = TrunkOut_getset,
    .tp_members = TrunkOut_members,
};

/* -- Receiver ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    srtp_fn unprotect;
    void *ctx;
    PyObject *session;              /* pylibsrtp's Session: keeps ctx alive */
    int pt;                         /* the leg's negotiated payload type */
    int law_pt;                     /* its law's static one (0, 8) */
    int16_t decode[256];
    uint8_t to_other[256];          /* its bytes -> the other law's */
    int has_last;
    uint16_t last;                  /* the newest sequence number taken */
    unsigned long long received, refused;
} Receiver;

static PyObject *Receiver_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    return type->tp_alloc(type, 0);
}

static int Receiver_init(Receiver *r, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"unprotect", "ctx", "session", "payload_type", "law_payload_type",
                         "decode", "to_other", NULL};
    unsigned long long unprotect, ctx;
    PyObject *session;
    Py_buffer decode, to_other;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKOiiy*y*", kw, &unprotect, &ctx, &session,
                                     &r->pt, &r->law_pt, &decode, &to_other))
        return -1;
    int ok = decode.len == 512 && to_other.len == 256 && unprotect && ctx;
    if (ok) {
        memcpy(r->decode, decode.buf, 512);
        memcpy(r->to_other, to_other.buf, 256);
    }
    PyBuffer_Release(&decode);
    PyBuffer_Release(&to_other);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "Receiver: SRTP's function and context, a 256-entry "
                                          "int16 decode table and a 256-byte law table");
        return -1;
    }
    r->unprotect = (srtp_fn)(uintptr_t)unprotect;
    r->ctx = (void *)(uintptr_t)ctx;
    Py_INCREF(session);
    Py_XSETREF(r->session, session);
    return 0;
}

static void Receiver_dealloc(Receiver *r) {
    Py_XDECREF(r->session);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* receive(datagram, out) -> None (not the leg's G.711 RTP: aiortc's), () (taken: refused,
 * old or a duplicate) or (seq, ts, ssrc, pcm, sent): the decoded payload (8 kHz s16 native
 * order), and whether it went to the trunk on ``out`` (a TrunkOut, or None) already. On
 * the event loop's thread. */
static PyObject *Receiver_receive(Receiver *r, PyObject *args) {
    Py_buffer data;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "y*O", &data, &out))
        return NULL;
    const uint8_t *d = data.buf;
    Py_ssize_t n = data.len;
    if (n < 12 || n > MAX_PACKET || d[0] < 128 || d[0] >= 192 || (d[1] >= 192 && d[1] <= 223)
            || (d[1] & 0x7f) != r->pt) {
        PyBuffer_Release(&data);
        Py_RETURN_NONE;
    }
    uint8_t buf[MAX_PACKET];
    memcpy(buf, d, (size_t)n);
    PyBuffer_Release(&data);
    int len = (int)n;
    if (r->unprotect(r->ctx, buf, &len) != 0 || len < 12) {
        r->refused++;
        return PyTuple_New(0);
    }
    uint16_t seq = get16(buf + 2);
    if (r->has_last && !((uint16_t)(seq - r->last) > 0 && (uint16_t)(seq - r->last) < 0x8000)) {
        r->refused++;  /* a duplicate, or older than what was played: a late packet */
        return PyTuple_New(0);
    }
    r->has_last = 1;
    r->last = seq;
    size_t start, end;
    payload_bounds(buf, (size_t)len, &start, &end);
    size_t count = start < end ? end - start : 0;
    PyObject *pcm = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(2 * count));
    if (pcm == NULL)
        return NULL;
    int16_t *samples = (int16_t *)PyBytes_AS_STRING(pcm);
    for (size_t i = 0; i < count; i++)
        samples[i] = r->decode[buf[start + i]];
    int sent = 0;
    if (count) {
        r->received++;
        if (out != Py_None && PyObject_TypeCheck(out, &TrunkOutType)) {
            TrunkOut *o = (TrunkOut *)out;
            uint8_t *payload = buf + start;
            lock_py(&o->lock);
            if (o->law >= 0 && o->law != r->law_pt)
                for (size_t i = 0; i < count; i++)
                    payload[i] = r->to_other[payload[i]];
            sent = trunkout_send(o, payload, count);
            pthread_mutex_unlock(&o->lock);
        }
    }
    return Py_BuildValue("(HIINN)", seq, get32(buf + 4), get32(buf + 8), pcm,
                         PyBool_FromLong(sent));
}

static PyMethodDef Receiver_methods[] = {
    {"receive", (PyCFunction)Receiver_receive, METH_VARARGS,
     "receive(datagram, out) -> None | () | (seq, ts, ssrc, pcm, sent)"},
    {NULL}};

static PyMemberDef Receiver_members[] = {
    {"received", T_ULONGLONG, offsetof(Receiver, received), READONLY, "packets with audio taken"},
    {"refused", T_ULONGLONG, offsetof(Receiver, refused), READONLY,
     "failed SRTP authentication, or old/duplicate packets"},
    {NULL}};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hitl_sip.media._rtpcore.Receiver",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Receiver(unprotect, ctx, session, payload_type, law_payload_type, decode, "
              "to_other): a G.711 WebRTC leg's incoming SRTP",
    .tp_new = Receiver_new,
    .tp_init = (initproc)Receiver_init,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_methods = Receiver_methods,
    .tp_members = Receiver_members,
};

/* -- Relay ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    int fd;                         /* the trunk-facing RTP socket (Python owns it) */
    int inner_fd;                   /* pjmedia-facing (Python owns it) */
    struct sockaddr_storage pj;
    socklen_t pj_len;
    TrunkOut *out;                  /* the stream to the trunk: its address is the source */
    Inbound *inbound;
    PyObject *on_packet;            /* a G.711 packet Python decides about */
    int mode;
    int lease;
    Sender *sender;                 /* MODE_AGENT's */
    unsigned long long refused;
} Relay;

static PyObject *Relay_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Relay *r = (Relay *)type->tp_alloc(type, 0);
    if (r != NULL)
        pthread_mutex_init(&r->lock, NULL);
    return (PyObject *)r;
}

static int Relay_init(Relay *r, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"fd", "inner_fd", "pj", "out", "inbound", "on_packet", NULL};
    int fd, inner;
    PyObject *pj, *out, *inbound, *on_packet;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiOO!O!O", kw, &fd, &inner, &pj,
                                     &TrunkOutType, &out, &InboundType, &inbound, &on_packet))
        return -1;
    if (parse_addr(pj, &r->pj, &r->pj_len) < 0)
        return -1;
    r->fd = fd;
    r->inner_fd = inner;
    Py_INCREF(out);
    Py_XSETREF(r->out, (TrunkOut *)out);
    Py_INCREF(inbound);
    Py_XSETREF(r->inbound, (Inbound *)inbound);
    Py_INCREF(on_packet);
    Py_XSETREF(r->on_packet, on_packet);
    return 0;
}

static void Relay_dealloc(Relay *r) {
    Py_XDECREF(r->out);
    Py_XDECREF(r->inbound);
    Py_XDECREF(r->on_packet);
    Py_XDECREF(r->sender);
    pthread_mutex_destroy(&r->lock);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* With the GIL: the mode for the next LEASE packets (sender: MODE_AGENT's, else NULL). */
static void relay_arm(Relay *r, int mode, Sender *sender) {
    Py_XINCREF(sender);
    lock_py(&r->lock);
    Sender *old = r->sender;
    r->sender = sender;
    r->mode = mode;
    r->lease = mode == MODE_PYTHON ? 0 : LEASE;
    pthread_mutex_unlock(&r->lock);
    Py_XDECREF(old);
}

static PyObject *Relay_disarm(Relay *r, PyObject *unused) {
    relay_arm(r, MODE_PYTHON, NULL);
    Py_RETURN_NONE;
}

static PyObject *Relay_close(Relay *r, PyObject *unused) {
    relay_arm(r, MODE_PYTHON, NULL);
    lock_py(&r->lock);
    PyObject *on_packet = r->on_packet;
    r->on_packet = Py_None;
    Py_INCREF(Py_None);
    pthread_mutex_unlock(&r->lock);
    Py_XDECREF(on_packet);
    Py_RETURN_NONE;
}


static PyMethodDef Relay_methods[] = {
    {"disarm", (PyCFunction)Relay_disarm, METH_NOARGS,
     "the next G.711 packet goes to on_packet, whose verdict arms the relay again"},
    {"close", (PyCFunction)Relay_close, METH_NOARGS,
     "drop the callback and the sender (after Core.remove): no cycle is left"},
    {NULL}};

static PyMemberDef Relay_members[] = {
    {"refused", T_ULONGLONG, offsetof(Relay, refused), READONLY, "packets from another source"},
    {NULL}};

static PyTypeObject RelayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hitl_sip.media._rtpcore.Relay",
    .tp_basicsize = sizeof(Relay),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Relay(fd, inner_fd, pj, out, inbound, on_packet): one call's trunk socket; "
              "RTP is taken from out's trunk address only",
    .tp_new = Relay_new,
    .tp_init = (initproc)Relay_init,
    .tp_dealloc = (destructor)Relay_dealloc,
    .tp_methods = Relay_methods,
    .tp_members = Relay_members,
};

/* -- Core -------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    int epfd;
    Relay **relays;                 /* by descriptor: a relay, or NULL (Python's) */
    unsigned char *python;          /* by descriptor: 1 when Python's */
    int size;
} Core;

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Core *c = (Core *)type->tp_alloc(type, 0);
    if (c == NULL)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

static void Core_dealloc(Core *c) {
    for (int i = 0; i < c->size; i++)
        Py_XDECREF(c->relays[i]);
    PyMem_RawFree(c->relays);
    PyMem_RawFree(c->python);
    if (c->epfd >= 0)
        close(c->epfd);
    pthread_mutex_destroy(&c->lock);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* c->lock held */
static int core_grow(Core *c, int fd) {
    if (fd < c->size)
        return 0;
    int size = c->size ? c->size : 64;
    while (size <= fd)
        size *= 2;
    Relay **relays = PyMem_RawRealloc(c->relays, sizeof *relays * (size_t)size);
    if (relays == NULL)
        return -1;
    c->relays = relays;
    unsigned char *python = PyMem_RawRealloc(c->python, (size_t)size);
    if (python == NULL)
        return -1;
    c->python = python;
    memset(c->relays + c->size, 0, sizeof *relays * (size_t)(size - c->size));
    memset(c->python + c->size, 0, (size_t)(size - c->size));
    c->size = size;
    return 0;
}

/* With the GIL; relay NULL: the descriptor's events go to run()'s dispatcher. */
static PyObject *core_add(Core *c, int fd, Relay *relay) {
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "a closed descriptor");
        return NULL;
    }
    lock_py(&c->lock);
    if (core_grow(c, fd) < 0) {
        pthread_mutex_unlock(&c->lock);
        return PyErr_NoMemory();
    }
    Relay *old = c->relays[fd];
    Py_XINCREF(relay);
    c->relays[fd] = relay;
    c->python[fd] = relay == NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    int rc = epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
    if (rc < 0 && errno == EEXIST)
        rc = epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev);
    int err = errno;
    pthread_mutex_unlock(&c->lock);
    Py_XDECREF(old);
    if (rc < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *Core_add_python(Core *c, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    return core_add(c, fd, NULL);
}

static PyObject *Core_add_relay(Core *c, PyObject *args) {
    Relay *relay;
    if (!PyArg_ParseTuple(args, "O!", &RelayType, &relay))
        return NULL;
    return core_add(c, relay->fd, relay);
}

static PyObject *Core_remove(Core *c, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    Relay *old = NULL;
    lock_py(&c->lock);
    if (fd >= 0 && fd < c->size) {
        old = c->relays[fd];
        c->relays[fd] = NULL;
        c->python[fd] = 0;
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
    }
    pthread_mutex_unlock(&c->lock);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* The relay thread, c->lock held, no GIL: the renumbered copy of a trunk packet to
 * pjmedia. */
static void relay_forward(Relay *r, const uint8_t *buf, ssize_t n) {
    uint8_t out[MAX_PACKET];
    inbound_renumber(r->inbound, buf, (size_t)n, out);
    sendto(r->inner_fd, out, (size_t)n, 0, (struct sockaddr *)&r->pj, r->pj_len);
}

/* The relay thread, c->lock held, no GIL: one datagram of the trunk's socket, sent to
 * the agent and forwarded to pjmedia — or, returning 1 (the packet in buf/len), left for
 * Python to decide about first and forwarded after. */
static int relay_packet(Relay *r, uint8_t *buf, ssize_t *len) {
    struct sockaddr_storage from;
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(r->fd, buf, MAX_PACKET, MSG_DONTWAIT, (struct sockaddr *)&from,
                         &from_len);
    if (n < 12 || buf[0] >> 6 != 2)
        return 0;  /* nothing, an error (an ICMP for an earlier send), or not RTP */
    pthread_mutex_lock(&r->out->lock);
    int trunk = same_addr(&from, &r->out->trunk);
    pthread_mutex_unlock(&r->out->lock);
    pthread_mutex_lock(&r->lock);
    if (!trunk) {
        r->refused++;
        pthread_mutex_unlock(&r->lock);
        return 0;
    }
    int pt = buf[1] & 0x7f, ask = 0;
    if (pt == 0 || pt == 8) {
        if (r->lease > 0 && r->mode == MODE_AGENT && !r->sender->closed) {
            r->lease--;
            size_t start, end;
            payload_bounds(buf, (size_t)n, &start, &end);
            if (start < end) {
                pthread_mutex_lock(&r->sender->lock);
                sender_payload(r->sender, pt, buf + start, end - start);
                r->sender->relayed++;
                pthread_mutex_unlock(&r->sender->lock);
            }
        } else if (r->lease > 0 && r->mode == MODE_NOBODY) {
            r->lease--;
        } else {
            ask = 1;
        }
    }
    pthread_mutex_unlock(&r->lock);
    *len = n;
    if (!ask)
        relay_forward(r, buf, n);
    return ask;
}

/* With the GIL: Python's verdict on a packet — a Sender (the agent's, from now), True
 * (nobody wants the caller's audio now) or anything else (ask again). */
static void relay_ask(Relay *r, const uint8_t *buf, ssize_t len) {
    PyObject *on_packet = r->on_packet;
    if (on_packet == NULL || on_packet == Py_None)
        return;  /* closed */
    Py_INCREF(on_packet);
    PyObject *verdict = PyObject_CallFunction(on_packet, "iy#", buf[1] & 0x7f,
                                              (const char *)buf, (Py_ssize_t)len);
    if (verdict == NULL)
        PyErr_WriteUnraisable(on_packet);
    Py_DECREF(on_packet);
    if (verdict == NULL)
        return;
    if (PyObject_TypeCheck(verdict, &SenderType))
        relay_arm(r, MODE_AGENT, (Sender *)verdict);
    else if (verdict == Py_True)
        relay_arm(r, MODE_NOBODY, NULL);
    else
        relay_arm(r, MODE_PYTHON, NULL);
    Py_DECREF(verdict);
}

static PyObject *Core_run(Core *c, PyObject *dispatch) {
    if (!PyCallable_Check(dispatch)) {
        PyErr_SetString(PyExc_TypeError, "run(dispatch): a callable");
        return NULL;
    }
    struct epoll_event events[64];
    uint8_t buf[MAX_PACKET];
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        int n = epoll_wait(c->epfd, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;  /* the epoll descriptor is gone: nothing more can be served */
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            pthread_mutex_lock(&c->lock);
            Relay *relay = fd < c->size ? c->relays[fd] : NULL;
            int python = fd < c->size && c->python[fd];
            if (relay != NULL) {
                ssize_t len = 0;
                int ask = relay_packet(relay, buf, &len);
                if (!ask) {
                    pthread_mutex_unlock(&c->lock);
                    continue;
                }
                PyEval_RestoreThread(ts);
                Py_INCREF(relay);
                pthread_mutex_unlock(&c->lock);
                relay_ask(relay, buf, len);
                ts = PyEval_SaveThread();
                pthread_mutex_lock(&c->lock);  /* unless it was removed meanwhile */
                if (fd < c->size && c->relays[fd] == relay)
                    relay_forward(relay, buf, len);
                pthread_mutex_unlock(&c->lock);
                PyEval_RestoreThread(ts);
                Py_DECREF(relay);
                ts = PyEval_SaveThread();
                continue;
            }
            pthread_mutex_unlock(&c->lock);
            if (!python)
                continue;  /* removed meanwhile */
            PyEval_RestoreThread(ts);
            PyObject *rv = PyObject_CallFunction(dispatch, "i", fd);
            if (rv == NULL)
                PyErr_WriteUnraisable(dispatch);
            Py_XDECREF(rv);
            ts = PyEval_SaveThread();
        }
    }
    int err = errno;
    PyEval_RestoreThread(ts);
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

static PyMethodDef Core_methods[] = {
    {"add_python", (PyCFunction)Core_add_python, METH_O,
     "add_python(fd): its readiness goes to run()'s dispatcher"},
    {"add_relay", (PyCFunction)Core_add_relay, METH_VARARGS,
     "add_relay(relay): its trunk socket is served here"},
    {"remove", (PyCFunction)Core_remove, METH_O, "remove(fd): before the descriptor closes"},
    {"run", (PyCFunction)Core_run, METH_O,
     "run(dispatch): serve for good (a daemon thread's), without the GIL but for "
     "dispatch(fd)"},
    {NULL}};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hitl_sip.media._rtpcore.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Core(): the relay thread's epoll loop",
    .tp_new = Core_new,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rtpcore",
    "The relayed per-packet path of a bridged G.711 call, in C.", -1, NULL};

PyMODINIT_FUNC PyInit__rtpcore(void) {
    PyTypeObject *types[] = {&SenderType, &InboundType, &TrunkOutType, &ReceiverType,
                             &RelayType, &CoreType};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    const char *names[] = {"Sender", "Inbound", "TrunkOut", "Receiver", "Relay", "Core"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    PyModule_AddIntConstant(m, "LEASE", LEASE);
    return m;
}

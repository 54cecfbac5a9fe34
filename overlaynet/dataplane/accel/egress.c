/* The VTEP's egress drain in C (issue 15): the per-frame work of `HotLoop._drain_tap` on the
 * RFC wire, nothing else. Plain C against libc, called through ctypes (the GIL is released).
 *
 * eg_drain reads frames from a TAP queue into one buffer until EAGAIN, the frame budget or the
 * buffer runs out, and groups them exactly as the Python drain does: batches of equal-size
 * frames of one flow (octets 26..38 after the virtio-net header) and one destination MAC, a
 * shorter frame ending its batch, at most EG_MAX_SEGMENTS / EG_MAX_BYTES per batch, batches of
 * interleaved flows parked and resumed. It writes "events" in the order the Python drain would
 * act: a lone frame for the Python single-frame path (broadcast/multicast, sizes out of range),
 * or a finished batch (its frames' indices). Nothing is sent here: the caller decides per batch
 * (FDB, targets, socket) and calls eg_send, which points iovecs into the buffer (no copies).
 *
 * Event words (uint32): EG_EV_ONE, frame index | EG_EV_BATCH, count, inner octets of the
 * frames together, frame index * count.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

/* The same limits as hotpath.GSO_MAX_SEGMENTS / GSO_MAX_BYTES (UDP-GSO caps). */
#define EG_MAX_SEGMENTS 64
#define EG_MAX_BYTES 65507
/* Octets of one read: larger than anything a TAP hands over (hotpath.READ_SIZE). */
#define EG_READ_SIZE (65536 + 64)
/* Flow key: octets 26..38 of a frame (IPv4 addresses and ports). */
#define EG_KEY_AT 26
#define EG_KEY_END 38
/* Parked batches at once: more flows than this in one drain send the oldest parked batch. */
#define EG_MAX_PARKED 64

enum { EG_EV_ONE = 1, EG_EV_BATCH = 2 };

/* The ABI version the Python wrapper checks (fastegress.ABI). */
int eg_abi(void) { return 2; }

struct batch {
    uint32_t first, last;  /* frame indices: a list through next[] */
    uint32_t count, size;  /* frames, length of the first (virtio-net header included) */
    uint32_t most, total;  /* frames allowed, inner octets so far */
    const uint8_t *key;    /* the first frame's flow key (octets 26..38 of the frame) */
    uint32_t klen;         /* its length: shorter for frames that end before octet 38 */
    uint8_t dst[6];
};

/* A queue's open batches carried from one drain to the next (the budget ran out with frames
 * still queued), with the frames they point at: kept in the caller's memory, eg_state_size. */
struct eg_state {
    struct batch cur;
    struct batch parked[EG_MAX_PARKED];
    uint32_t nparked, pos, nf;
};

int eg_state_size(void) { return (int)sizeof(struct eg_state); }

struct ctx {
    const uint8_t *buf;
    const uint32_t *off, *len;
    uint32_t *next;
    uint32_t *ev;
    uint32_t nev;
    uint32_t skip;
};

static void emit_one(struct ctx *c, uint32_t i) {
    c->ev[c->nev++] = EG_EV_ONE;
    c->ev[c->nev++] = i;
}

static void emit(struct ctx *c, const struct batch *b) {
    c->ev[c->nev++] = EG_EV_BATCH;
    c->ev[c->nev++] = b->count;
    c->ev[c->nev++] = b->total;
    uint32_t i = b->first;
    for (uint32_t k = 0; k < b->count; k++) {
        c->ev[c->nev++] = i;
        i = c->next[i];
    }
}

static void append(struct ctx *c, struct batch *b, uint32_t i) {
    c->next[b->last] = i;
    b->last = i;
    b->count++;
    b->total += c->len[i] - c->skip;
}

/* Octets of frame i's flow key: as a Python slice [26:38] of a frame that may be shorter. */
static uint32_t key_len(const struct ctx *c, uint32_t i) {
    uint32_t n = c->len[i] - c->skip;
    return n >= EG_KEY_END ? EG_KEY_END - EG_KEY_AT : n > EG_KEY_AT ? n - EG_KEY_AT : 0;
}

/* Whether frame i has batch b's flow key and destination MAC. */
static int same(const struct ctx *c, const struct batch *b, uint32_t i) {
    const uint8_t *f = c->buf + c->off[i] + c->skip;
    return key_len(c, i) == b->klen && memcmp(f + EG_KEY_AT, b->key, b->klen) == 0 &&
           memcmp(f, b->dst, 6) == 0;
}

/*
 * Read and group. buf: cap octets; off/len/next: room for maxframes entries; ev: room for
 * 4 * maxframes words. skip: virtio-net header octets; shortest/limit: the frame lengths
 * (header included) the batching takes; overhead: octets per datagram besides the inner frame
 * (VXLAN 8). *status: 0 the queue ran empty (EAGAIN), 1 the budget or buffer ran out, -errno
 * a read error. *frames: frames read. Returns the number of event words.
 */
int eg_drain(struct eg_state *st, int fd, uint8_t *buf, uint32_t cap, uint32_t *off,
             uint32_t *len, uint32_t *next, uint32_t maxframes, uint32_t budget, uint32_t skip,
             uint32_t shortest, uint32_t limit, uint32_t overhead, uint32_t *ev, int *status,
             uint32_t *frames) {
    struct ctx c = {buf, off, len, next, ev, 0, skip};
    struct batch cur = st->cur, *parked = st->parked;
    uint32_t nparked = st->nparked, pos = st->pos, nf = st->nf, first = st->nf;
    uint32_t until = maxframes - nf < budget ? maxframes : nf + budget;
    *status = 1;
    while (nf < until && cap - pos >= EG_READ_SIZE) {
        ssize_t got = read(fd, buf + pos, EG_READ_SIZE);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            *status = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
            break;
        }
        uint32_t i = nf++, n = (uint32_t)got;
        off[i] = pos;
        len[i] = n;
        next[i] = 0;
        pos += (n + 7u) & ~7u;
        const uint8_t *f = buf + off[i] + skip;
        if (cur.count) {
            /* The common case first: one more frame of the batch's size, flow and MAC. */
            int match = same(&c, &cur, i);
            if (n == cur.size && match && cur.count < cur.most) {
                append(&c, &cur, i);
                continue;
            }
            if (match) {
                if (shortest <= n && n < cur.size && cur.count < cur.most) {
                    append(&c, &cur, i); /* a shorter frame of the flow ends the batch */
                    emit(&c, &cur);
                    cur.count = 0;
                    continue;
                }
                emit(&c, &cur);
            } else {
                if (nparked == EG_MAX_PARKED) {
                    emit(&c, &parked[0]);
                    memmove(parked, parked + 1, sizeof parked[0] * --nparked);
                }
                parked[nparked++] = cur;
            }
            cur.count = 0;
        }
        if (n < shortest || n > limit) {
            emit_one(&c, i);
            continue;
        }
        for (uint32_t p = 0; p < nparked; p++) {
            if (!same(&c, &parked[p], i))
                continue;
            cur = parked[p];
            memmove(parked + p, parked + p + 1, sizeof parked[0] * (nparked - p - 1));
            nparked--;
            if (n <= cur.size && cur.count < cur.most) {
                append(&c, &cur, i);
                if (n < cur.size) {
                    emit(&c, &cur);
                    cur.count = 0;
                }
                goto next_frame;
            }
            emit(&c, &cur);
            cur.count = 0;
            break;
        }
        if (f[0] & 0x01) { /* broadcast and multicast: the Python single-frame path */
            emit_one(&c, i);
            continue;
        }
        cur.first = cur.last = i;
        cur.count = 1;
        cur.size = n;
        cur.total = n - skip;
        cur.key = f + EG_KEY_AT;
        cur.klen = key_len(&c, i);
        memcpy(cur.dst, f, 6);
        cur.most = EG_MAX_BYTES / (n - skip + overhead);
        if (cur.most > EG_MAX_SEGMENTS)
            cur.most = EG_MAX_SEGMENTS;
        if (cur.most <= 1) {
            emit(&c, &cur);
            cur.count = 0;
        }
    next_frame:;
    }
    *frames = nf - first;
    if (*status == 1 && (cur.count || nparked) && nf < maxframes && cap - pos >= EG_READ_SIZE) {
        /* Frames still queued: the open batches wait for this queue's next drain, which
         * reads on behind them (so a small budget does not cut batches short). */
        st->cur = cur;
        st->nparked = nparked;
        st->pos = pos;
        st->nf = nf;
        return (int)c.nev;
    }
    if (cur.count)
        emit(&c, &cur);
    for (uint32_t p = 0; p < nparked; p++)
        emit(&c, &parked[p]);
    memset(st, 0, sizeof *st);
    return (int)c.nev;
}

/* Emit a queue's carried batches without reading (the Python drain takes the queue over). */
int eg_flush(struct eg_state *st, const uint32_t *len, uint32_t *next, uint32_t skip,
             uint32_t *ev) {
    struct ctx c = {0, 0, len, next, ev, 0, skip};
    if (st->cur.count)
        emit(&c, &st->cur);
    for (uint32_t p = 0; p < st->nparked; p++)
        emit(&c, &st->parked[p]);
    memset(st, 0, sizeof *st);
    return (int)c.nev;
}

/* Whether the queue holds carried batches. */
int eg_carried(const struct eg_state *st) { return st->cur.count || st->nparked; }

/*
 * Send `count` frames (indices idx[0..count)) behind the 8-octet VXLAN header `hdr` to
 * ip:port (network order) from socket `sock`: one UDP-GSO sendmsg of datagrams of `segment`
 * octets when count > 1, a plain datagram when 1. Returns 0 or -errno.
 */
int eg_send(int sock, const uint8_t *buf, const uint32_t *off, const uint32_t *len,
            const uint32_t *idx, uint32_t count, uint32_t skip, const uint8_t *hdr, uint32_t ip,
            uint16_t port, uint16_t segment) {
    struct iovec iov[2 * EG_MAX_SEGMENTS];
    if (count == 0 || count > EG_MAX_SEGMENTS)
        return -EINVAL;
    for (uint32_t k = 0; k < count; k++) {
        iov[2 * k].iov_base = (void *)hdr;
        iov[2 * k].iov_len = 8;
        iov[2 * k + 1].iov_base = (void *)(buf + off[idx[k]] + skip);
        iov[2 * k + 1].iov_len = len[idx[k]] - skip;
    }
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = ip;
    to.sin_port = port;
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_name = &to;
    msg.msg_namelen = sizeof to;
    msg.msg_iov = iov;
    msg.msg_iovlen = 2 * count;
    if (count > 1) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(cm), &segment, sizeof segment);
    }
    for (;;) {
        if (sendmsg(sock, &msg, 0) >= 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

/*
 * The same frames one datagram each (GSO refused): errors[0] counts EMSGSIZE (the underlay
 * path MTU is below the frame), errors[1] every other failure.
 */
void eg_send_each(int sock, const uint8_t *buf, const uint32_t *off, const uint32_t *len,
                  const uint32_t *idx, uint32_t count, uint32_t skip, const uint8_t *hdr,
                  uint32_t ip, uint16_t port, uint32_t *errors) {
    for (uint32_t k = 0; k < count; k++) {
        int rc = eg_send(sock, buf, off, len, idx + k, 1, skip, hdr, ip, port, 0);
        if (rc == -EMSGSIZE)
            errors[0]++;
        else if (rc < 0)
            errors[1]++;
    }
}

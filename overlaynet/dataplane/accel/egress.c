/* The VTEP's egress drain in C (issue 15): the per-frame work of `HotLoop._drain_tap` on the
 * RFC wire, nothing else. Plain C against libc, called through ctypes (the GIL is released).
 *
 * eg_run reads frames from a TAP queue into one buffer until EAGAIN, the frame budget or the
 * buffer runs out, and groups them exactly as the Python drain does: batches of equal-size
 * frames of one flow (octets 26..38 after the virtio-net header) and one destination MAC, a
 * shorter frame ending its batch, at most EG_MAX_SEGMENTS / EG_MAX_BYTES per batch, batches of
 * interleaved flows parked and resumed. It writes "events" in the order the Python drain would
 * act: a lone frame for the Python single-frame path (broadcast/multicast, sizes out of range),
 * or a finished batch (its frames' indices). Then it carries the events out in order while they
 * are batches to MACs its table knows (eg_act: where Python said the MAC lives, eg_learn), with
 * eg_send pointing iovecs into the buffer (no copies); it stops at the first event Python must
 * do (a lone or raw frame, a MAC not known here), and Python goes on from there.
 *
 * A TAP with offloads (TSO4 + CSUM, issues 15 and 19) hands over TCP super-frames and partial
 * checksums: a super-frame is cut into its MSS segments in place (one read per ~46 segments
 * instead of one each) and every checksum finished, octet for octet what `segment.wire_frames`
 * makes; the segments then go through the batching as frames read one by one. A read that
 * cannot be finished here is an EG_EV_RAW event, after every open batch (its flow's order).
 *
 * Event words (uint32): EG_EV_ONE, frame index | EG_EV_BATCH, count, inner octets of the
 * frames together, frame index * count | EG_EV_RAW, frame index (virtio-net header included).
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
/* Segments of one super-frame cut here at least (a 64 KB super-frame at MSS 1024 and above:
 * 1398 on a 1450 overlay makes 47): the frame table keeps this many entries free before each
 * read. A super-frame of more segments is cut here too if the table's free entries and the
 * buffer's room hold them (both checked); else (a tiny MSS) the Python path takes it. */
#define EG_TSO_SEGMENTS 64
/* Octets segments take beyond the super-frame they were cut from: per segment its headers
 * again (virtio-net 10 + Ethernet 14 + IPv4 and TCP at most 60 each) and 7 of alignment,
 * and one MSS of rounding. */
#define EG_HEAD_MAX (12 + 14 + 60 + 60)
#define EG_TSO_SLACK (EG_TSO_SEGMENTS * (EG_HEAD_MAX + 7) + 9216)
#define EG_TCP_FIN_PSH 0x09
#define EG_TCP_CWR 0x80

enum { EG_EV_ONE = 1, EG_EV_BATCH = 2, EG_EV_RAW = 3 };

/* The ABI version the Python wrapper checks (fastegress.ABI). */
int eg_abi(void) { return 4; }

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

static void emit_one(struct ctx *c, uint32_t kind, uint32_t i) {
    c->ev[c->nev++] = kind;
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

/* Every open batch out (current first, then the parked ones in their order). */
static void emit_all(struct ctx *c, struct eg_state *st) {
    if (st->cur.count)
        emit(c, &st->cur);
    for (uint32_t p = 0; p < st->nparked; p++)
        emit(c, &st->parked[p]);
    st->cur.count = 0;
    st->nparked = 0;
}

/*
 * Group frame i (a wire-ready frame in the buffer) into the batches: the per-frame rules of
 * `HotLoop._drain_tap`. shortest/limit: the frame lengths (header included) batching takes.
 */
static void take(struct ctx *c, struct eg_state *st, uint32_t i, uint32_t shortest,
                 uint32_t limit, uint32_t overhead) {
    struct batch *cur = &st->cur, *parked = st->parked;
    uint32_t n = c->len[i];
    const uint8_t *f = c->buf + c->off[i] + c->skip;
    if (cur->count) {
        /* The common case first: one more frame of the batch's size, flow and MAC. */
        int match = same(c, cur, i);
        if (n == cur->size && match && cur->count < cur->most) {
            append(c, cur, i);
            return;
        }
        if (match) {
            if (shortest <= n && n < cur->size && cur->count < cur->most) {
                append(c, cur, i); /* a shorter frame of the flow ends the batch */
                emit(c, cur);
                cur->count = 0;
                return;
            }
            emit(c, cur);
        } else {
            if (st->nparked == EG_MAX_PARKED) {
                emit(c, &parked[0]);
                memmove(parked, parked + 1, sizeof parked[0] * --st->nparked);
            }
            parked[st->nparked++] = *cur;
        }
        cur->count = 0;
    }
    if (n < shortest || n > limit) {
        emit_one(c, EG_EV_ONE, i);
        return;
    }
    for (uint32_t p = 0; p < st->nparked; p++) {
        if (!same(c, &parked[p], i))
            continue;
        *cur = parked[p];
        memmove(parked + p, parked + p + 1, sizeof parked[0] * (st->nparked - p - 1));
        st->nparked--;
        if (n <= cur->size && cur->count < cur->most) {
            append(c, cur, i);
            if (n < cur->size) {
                emit(c, cur);
                cur->count = 0;
            }
            return;
        }
        emit(c, cur);
        cur->count = 0;
        break;
    }
    if (f[0] & 0x01) { /* broadcast and multicast: the Python single-frame path */
        emit_one(c, EG_EV_ONE, i);
        return;
    }
    cur->first = cur->last = i;
    cur->count = 1;
    cur->size = n;
    cur->total = n - c->skip;
    cur->key = f + EG_KEY_AT;
    cur->klen = key_len(c, i);
    memcpy(cur->dst, f, 6);
    cur->most = EG_MAX_BYTES / (n - c->skip + overhead);
    if (cur->most > EG_MAX_SEGMENTS)
        cur->most = EG_MAX_SEGMENTS;
    if (cur->most <= 1) {
        emit(c, cur);
        cur->count = 0;
    }
}

/* -- finishing what a TAP with offloads hands over (segment.wire_frames, in C) -------------- */

/* The ones'-complement sum of n octets at p, in the machine's byte order, not folded. */
static uint64_t csum_add(uint64_t sum, const uint8_t *p, uint32_t n) {
    uint32_t word;
    while (n >= 4) {
        memcpy(&word, p, 4);
        sum += word;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t half;
        memcpy(&half, p, 2);
        sum += half;
        p += 2;
        n -= 2;
    }
    if (n) { /* an odd last octet is the high half of a zero-padded word (RFC 1071) */
        uint8_t pad[2] = {p[0], 0};
        uint16_t half;
        memcpy(&half, pad, 2);
        sum += half;
    }
    return sum;
}

/* The folded sum, complemented: what goes into a checksum field (machine byte order). */
static uint16_t csum_fold(uint64_t sum) {
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* virtio-net header fields: little-endian (a legacy header on the machines this runs on). */
static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

static void put_be16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/*
 * A NEEDS_CSUM frame (f, n octets after the virtio-net header): the sum from csum_start to the
 * end into the field at csum_start + csum_offset, which holds the pseudo-header sum
 * (segment.finish_checksum). UDP sends a computed 0 as 0xFFFF. 0, or -1: the Python path
 * decides (and counts) what is wrong.
 */
static int finish_csum(uint8_t *f, uint32_t n, uint32_t start, uint32_t offset) {
    uint32_t at = start + offset;
    if (start < 14 || at + 2 > n || n < 24)
        return -1;
    uint16_t value = csum_fold(csum_add(0, f + start, n - start));
    if (value == 0 && be16(f + 12) == 0x0800 && f[23] == 17)
        value = 0xFFFF;
    memcpy(f + at, &value, 2);
    return 0;
}

/*
 * A TCP/IPv4 super-frame at buf + pos (virtio-net header, frame: n octets) cut into its
 * segments in place (segment.segment_tcp4): segment k goes to pos + k * stride, each with a
 * plain virtio-net header, so the batching takes them as frames read one by one. Done from
 * the last segment to the first: each one's payload moves forward, never over a payload not
 * yet moved. Returns the number of segments, or 0: the Python path takes the frame (not
 * TCP/IPv4, a header it cannot honour, more segments or octets than there is room for, or
 * segments over `limit`, the longest frame with its virtio-net header: Python drops such a
 * super-frame whole and counts it once, `HotLoop._finish`).
 */
static uint32_t segment_tcp4(uint8_t *buf, uint32_t pos, uint32_t n, uint32_t skip,
                             uint32_t limit, uint32_t room, uint32_t slots, uint32_t *off,
                             uint32_t *len, uint32_t *next, uint32_t nf) {
    uint8_t head[EG_HEAD_MAX];
    const uint8_t *v = buf + pos, *f = v + skip;
    uint32_t flen = n - skip, mss = le16(v + 4);
    if ((v[1] & 0x7F) != 1 || flen < 14 + 40 || be16(f + 12) != 0x0800)
        return 0;
    uint32_t ihl = (f[14] & 0x0F) * 4u, tcp_at = 14 + ihl;
    if (f[14 + 9] != 6 || ihl < 20 || flen < tcp_at + 20)
        return 0;
    uint32_t doff = (f[tcp_at + 12] >> 4) * 4u, hdr = tcp_at + doff;
    if (doff < 20 || hdr > flen || mss == 0 || skip + hdr > EG_HEAD_MAX)
        return 0;
    uint32_t total = flen - hdr, nseg = total ? (total + mss - 1) / mss : 1;
    if ((uint64_t)skip + hdr + (total < mss ? total : mss) > limit)
        return 0;
    uint32_t stride = (skip + hdr + mss + 7u) & ~7u;
    uint64_t end = (uint64_t)stride * (nseg - 1) + skip + hdr + (total < mss ? total : mss);
    if (nseg > slots || end > room)
        return 0;
    memcpy(head, v, skip + hdr);
    memset(head, 0, skip); /* a plain virtio-net header: nothing left to do */
    uint8_t *ip0 = head + skip + 14, *tcp0 = head + skip + tcp_at;
    uint32_t ip_id = be16(ip0 + 4), flags = tcp0[13];
    uint32_t seq = (uint32_t)tcp0[4] << 24 | (uint32_t)tcp0[5] << 16 |
                   (uint32_t)tcp0[6] << 8 | tcp0[7];
    uint64_t pseudo = csum_add(0, ip0 + 12, 8) + htons(6);
    for (uint32_t k = nseg; k-- > 0;) {
        uint32_t at = k * mss, piece = total - at < mss ? total - at : mss;
        uint8_t *out = buf + pos + k * stride;
        memmove(out + skip + hdr, f + hdr + at, piece);
        memcpy(out, head, skip + hdr);
        uint8_t *ip = out + skip + 14, *tcp = out + skip + tcp_at;
        put_be16(ip + 2, ihl + doff + piece);
        put_be16(ip + 4, (ip_id + k) & 0xFFFF);
        ip[10] = ip[11] = 0;
        uint16_t sum = csum_fold(csum_add(0, ip, ihl));
        memcpy(ip + 10, &sum, 2);
        uint32_t s = seq + at;
        tcp[4] = (uint8_t)(s >> 24);
        tcp[5] = (uint8_t)(s >> 16);
        tcp[6] = (uint8_t)(s >> 8);
        tcp[7] = (uint8_t)s;
        uint32_t fl = k == nseg - 1 ? flags : flags & ~EG_TCP_FIN_PSH;
        tcp[13] = (uint8_t)(k == 0 ? fl : fl & ~EG_TCP_CWR);
        tcp[16] = tcp[17] = 0;
        sum = csum_fold(csum_add(pseudo + htons((uint16_t)(doff + piece)), tcp, doff + piece));
        memcpy(tcp + 16, &sum, 2);
        off[nf + k] = pos + k * stride;
        len[nf + k] = skip + hdr + piece;
        next[nf + k] = 0;
    }
    return nseg;
}

/*
 * Read and group. buf: cap octets; off/len/next: room for maxframes entries; ev: room for
 * 4 * maxframes words. skip: virtio-net header octets; shortest/limit: the frame lengths
 * (header included) the batching takes; overhead: octets per datagram besides the inner frame
 * (VXLAN 8). With a virtio-net header, TCP super-frames are cut into segments and partial
 * checksums finished here; what cannot be is an EG_EV_RAW event (Python's `segment` path).
 * *status: 0 the queue ran empty (EAGAIN), 1 the budget or buffer ran out, -errno a read
 * error. *frames: frames read. stats: += super-frames segmented, segments made, checksums
 * finished. Returns the number of event words.
 */
static int drain(struct eg_state *st, int fd, uint8_t *buf, uint32_t cap, uint32_t *off,
                 uint32_t *len, uint32_t *next, uint32_t maxframes, uint32_t budget,
                 uint32_t skip, uint32_t shortest, uint32_t limit, uint32_t overhead,
                 uint32_t *ev, int64_t *status, int64_t *frames, int64_t *stats) {
    struct ctx c = {buf, off, len, next, ev, 0, skip};
    uint32_t pos = st->pos, nf = st->nf, first = st->nf;
    uint32_t until = maxframes - nf < budget ? maxframes : nf + budget;
    /* With a virtio-net header a read may be a super-frame: room for its segments too. */
    uint32_t need = skip ? EG_READ_SIZE + EG_TSO_SLACK : EG_READ_SIZE;
    uint32_t slots = skip ? EG_TSO_SEGMENTS : 1;
    *status = 1;
    while (nf < until && cap - pos >= need && maxframes - nf >= slots) {
        ssize_t got = read(fd, buf + pos, EG_READ_SIZE);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            *status = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
            break;
        }
        uint32_t i = nf, n = (uint32_t)got;
        off[i] = pos;
        len[i] = n;
        next[i] = 0;
        uint8_t *v = buf + pos;
        /* A read shorter than its virtio-net header (no TAP makes one, a stand-in may) goes
         * to Python too: taken as a frame, its length less skip would wrap around. */
        if (skip && (n < skip || v[0] & 1 || v[1])) {
            uint32_t made = 0;
            if (n < skip) {
                made = 0;
            } else if (v[1] == 0) {
                if (finish_csum(v + skip, n - skip, le16(v + 6), le16(v + 8)) == 0) {
                    v[0] = 0;
                    stats[2]++;
                    made = 1;
                }
            } else {
                made = segment_tcp4(buf, pos, n, skip, limit, cap - pos, maxframes - nf, off,
                                    len, next, nf);
                if (made) {
                    stats[0]++;
                    stats[1] += made;
                }
            }
            if (!made) { /* Python finishes it: every batch of before leaves first */
                nf++;
                pos += (n + 7u) & ~7u;
                emit_all(&c, st);
                emit_one(&c, EG_EV_RAW, i);
                continue;
            }
            nf += made;
            pos = off[nf - 1] + ((len[nf - 1] + 7u) & ~7u);
            for (uint32_t k = i; k < nf; k++)
                take(&c, st, k, shortest, limit, overhead);
            continue;
        }
        nf++;
        pos += (n + 7u) & ~7u;
        take(&c, st, i, shortest, limit, overhead);
    }
    *frames = nf - first;
    if (*status == 1 && (st->cur.count || st->nparked) && nf + slots <= maxframes &&
        cap - pos >= need) {
        /* Frames still queued: the open batches wait for this queue's next drain, which
         * reads on behind them (so a small budget does not cut batches short). */
        st->pos = pos;
        st->nf = nf;
        return (int)c.nev;
    }
    emit_all(&c, st);
    memset(st, 0, sizeof *st);
    return (int)c.nev;
}

/* Emit a queue's carried batches without reading (the Python drain takes the queue over). */
int eg_flush(struct eg_state *st, const uint32_t *len, uint32_t *next, uint32_t skip,
             uint32_t *ev) {
    struct ctx c = {0, 0, len, next, ev, 0, skip};
    emit_all(&c, st);
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

/* -- sending the batches here (issue 15: no Python pass per batch) ------------------------- */

/*
 * Where destination MACs live, per TAP queue, filled by Python (eg_learn) the first time a
 * batch goes to a MAC: route MAC -> slot, slot -> the remote addresses (an FDB entry's one,
 * or every peer for unknown unicast: a "flood" slot). Python drops it (eg_params.fresh)
 * whenever the network's FDB table or its peers changed, so a batch is sent here only to
 * where the Python drain would send it. Routes are current while their stamp is the table's
 * epoch: dropping the table is one increment, not a clear of every route.
 */
#define EG_ROUTES 2048 /* power of two: the hash's mask */
#define EG_PROBES 16   /* routes tried per lookup: beyond, Python sends the batch */
#define EG_SLOTS 1024  /* destinations (FDB entries and the flood slot) per table */
#define EG_IPS 4096    /* remote addresses of every slot together (a flood slot has all peers) */

struct eg_route {
    uint8_t mac[6];
    uint16_t pad;
    uint32_t epoch, slot;
};

struct eg_slot {
    uint32_t ip_at, nips, flood;
};

struct eg_table {
    uint32_t epoch, nslots, nips, pad;
    struct eg_route routes[EG_ROUTES];
    struct eg_slot slots[EG_SLOTS];
    uint32_t ips[EG_IPS];
};

int eg_table_size(void) { return (int)sizeof(struct eg_table); }
/* Destinations per table: the Python side sizes its count arrays by it (checked at load). */
int eg_slots(void) { return EG_SLOTS; }

/* Counts the caller folds after each call (fastegress._C_*), int64 each. */
enum {
    EG_C_GSO_BATCHES, EG_C_UNKNOWN, EG_C_FALLBACK, EG_C_TOO_BIG, EG_C_ERROR, EG_C_DIRTY,
    EG_C_COUNTED, EG_C_TSO_SEGMENTED, EG_C_TSO_SEGMENTS, EG_C_CSUM, EG_C_STATUS, EG_C_FRAMES,
    EG_C_ACTED, EG_C_CARRIED, EG_C_COUNT
};

/* One queue's drain: what it reads into (once 17 ctypes arguments per drain) and where batches
 * go. Inputs set by the caller once per queue (budget and fresh per drain); outputs in
 * `counts`. */
struct eg_params {
    struct eg_state *st;
    uint8_t *buf;
    uint32_t *off, *len, *next, *ev;
    struct eg_table *table;
    const int32_t *tx, *tx_gso; /* the loop's sending sockets: plain, UDP-GSO (ntx each) */
    const uint8_t *hdr;         /* the network's VXLAN header (8 octets) */
    int64_t *slot_counts;       /* per slot: frames, inner octets sent since the last fold */
    uint32_t *dirty;            /* slots with counts, in the order first counted */
    int64_t *counts;            /* EG_C_COUNT */
    int32_t fd;
    uint32_t cap, maxframes, budget, skip, shortest, limit, overhead;
    uint32_t ntx, port; /* port: the VTEP's UDP port, host order */
    uint32_t fresh;     /* nonzero: drop the table before this drain (cleared here) */
    uint32_t last;      /* the route found last: tried first */
};

static uint32_t route_hash(const uint8_t *mac) {
    uint64_t v = 0;
    memcpy(&v, mac, 6);
    return (uint32_t)((v * 0x9E3779B97F4A7C15ull) >> 40) & (EG_ROUTES - 1);
}

/* The slot of `mac`, or -1: not known here. */
static int route_find(struct eg_params *p, const uint8_t *mac) {
    struct eg_table *t = p->table;
    const struct eg_route *r = &t->routes[p->last & (EG_ROUTES - 1)];
    if (r->epoch == t->epoch && memcmp(r->mac, mac, 6) == 0)
        return (int)r->slot;
    uint32_t h = route_hash(mac);
    for (uint32_t k = 0; k < EG_PROBES; k++) {
        uint32_t at = (h + k) & (EG_ROUTES - 1);
        r = &t->routes[at];
        if (r->epoch != t->epoch)
            return -1;
        if (memcmp(r->mac, mac, 6) == 0) {
            p->last = at;
            return (int)r->slot;
        }
    }
    return -1;
}

/*
 * Teach the table that `mac` goes to slot `slot`, or (slot < 0) to a new slot of the `nips`
 * addresses at `ips` (network order; flood: unknown unicast, every peer). Returns the slot,
 * or -1: no room (the batches to `mac` stay Python's).
 */
int eg_learn(struct eg_table *t, const uint8_t *mac, int slot, const uint32_t *ips,
             uint32_t nips, uint32_t flood) {
    uint32_t h = route_hash(mac), at = EG_ROUTES;
    for (uint32_t k = 0; k < EG_PROBES; k++) {
        uint32_t i = (h + k) & (EG_ROUTES - 1);
        if (t->routes[i].epoch != t->epoch || memcmp(t->routes[i].mac, mac, 6) == 0) {
            at = i;
            break;
        }
    }
    if (at == EG_ROUTES)
        return -1;
    if (slot < 0) {
        if (t->nslots == EG_SLOTS || nips == 0 || nips > EG_IPS - t->nips)
            return -1;
        slot = (int)t->nslots++;
        struct eg_slot *s = &t->slots[slot];
        s->ip_at = t->nips;
        s->nips = nips;
        s->flood = flood;
        memcpy(t->ips + t->nips, ips, sizeof *ips * nips);
        t->nips += nips;
    } else if ((uint32_t)slot >= t->nslots) {
        return -1;
    }
    struct eg_route *r = &t->routes[at];
    memcpy(r->mac, mac, 6);
    r->epoch = t->epoch;
    r->slot = (uint32_t)slot;
    return slot;
}

static void table_drop(struct eg_table *t) {
    if (++t->epoch == 0) { /* wrapped: a route of 2^32 drops ago would look current */
        memset(t->routes, 0, sizeof t->routes);
        t->epoch = 1;
    }
    t->nslots = t->nips = 0;
}

/* zlib's crc32 of n octets at p, going on from `crc` (zlib.crc32(data, crc)). */
static uint32_t crc32_of(uint32_t crc, const uint8_t *p, uint32_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* switching.flow_hash of a frame of n octets (it looks at 40 at most). */
static uint32_t flow_hash(const uint8_t *f, uint32_t n) {
    if (n >= 38 && f[12] == 0x08 && f[13] == 0x00) {
        if (f[14] == 0x45 && !((f[20] & 0x3F) || f[21])) {
            uint8_t proto = f[23];
            if (proto == 6 || proto == 17 || proto == 33 || proto == 132 || proto == 136)
                return crc32_of(0, f + 26, 12);
            if (proto == 1) {
                if ((f[34] == 0 || f[34] == 8) && n >= 40)
                    return crc32_of(crc32_of(0, f + 26, 10), f + 38, 2);
                return crc32_of(0, f + 26, 10);
            }
        }
        return crc32_of(crc32_of(0, f + 26, 8), f + 23, 1);
    }
    return crc32_of(0, f, 14);
}

/* Send one batch to slot s's addresses as fastegress's Python batch path does. */
static void send_batch(struct eg_params *p, const struct eg_slot *s, const uint32_t *idx,
                       uint32_t count) {
    int64_t *c = p->counts;
    uint32_t first = idx[0], skip = p->skip;
    const uint8_t *f = p->buf + p->off[first] + skip;
    uint32_t n = p->len[first] - skip;
    uint32_t index = flow_hash(f, n) % p->ntx;
    uint16_t port = htons((uint16_t)p->port);
    const uint32_t *ips = p->table->ips + s->ip_at;
    for (uint32_t k = 0; k < s->nips; k++) {
        int rc;
        if (count == 1) {
            rc = eg_send(p->tx[index], p->buf, p->off, p->len, idx, 1, skip, p->hdr, ips[k],
                         port, 0);
            if (rc < 0)
                c[rc == -EMSGSIZE ? EG_C_TOO_BIG : EG_C_ERROR]++;
            continue;
        }
        c[EG_C_GSO_BATCHES]++;
        rc = eg_send(p->tx_gso[index], p->buf, p->off, p->len, idx, count, skip, p->hdr,
                     ips[k], port, (uint16_t)(n + 8));
        if (rc < 0) { /* GSO refused: the same datagrams one by one, each failure counted */
            uint32_t errors[2] = {0, 0};
            c[EG_C_FALLBACK]++;
            eg_send_each(p->tx[index], p->buf, p->off, p->len, idx, count, skip, p->hdr,
                         ips[k], port, errors);
            c[EG_C_TOO_BIG] += errors[0];
            c[EG_C_ERROR] += errors[1];
        }
    }
}

/*
 * Carry out the events from word `from` on while they are batches to MACs the table knows:
 * sent, counted per slot (frames, octets) and per network. Returns the word reached: the
 * first event left to Python (a lone or raw frame, a MAC not known here), or `words`.
 */
int eg_act(struct eg_params *p, int from, int words) {
    int at = from;
    int64_t *c = p->counts;
    while (at < words) {
        const uint32_t *e = p->ev + at;
        if (e[0] != EG_EV_BATCH)
            break;
        uint32_t count = e[1], first = e[3];
        int slot = route_find(p, p->buf + p->off[first] + p->skip);
        if (slot < 0)
            break;
        const struct eg_slot *s = &p->table->slots[slot];
        if (s->flood) {
            c[EG_C_UNKNOWN] += count;
        } else {
            int64_t *sc = p->slot_counts + 2 * slot;
            if (sc[0] == 0)
                p->dirty[c[EG_C_DIRTY]++] = (uint32_t)slot;
            sc[0] += count;
            sc[1] += e[2];
        }
        send_batch(p, s, e + 3, count);
        c[EG_C_COUNTED] = 1;
        at += 3 + (int)count;
    }
    c[EG_C_ACTED] = at;
    return at;
}

/* drain() with its parameters in `p`, then eg_act from the first event. Returns the number of
 * event words (counts[EG_C_ACTED]: how many of them are done). */
int eg_run(struct eg_params *p) {
    int64_t *c = p->counts;
    if (p->fresh) {
        table_drop(p->table);
        p->fresh = 0;
    }
    int words = drain(p->st, p->fd, p->buf, p->cap, p->off, p->len, p->next, p->maxframes,
                      p->budget, p->skip, p->shortest, p->limit, p->overhead, p->ev,
                      &c[EG_C_STATUS], &c[EG_C_FRAMES], &c[EG_C_TSO_SEGMENTED]);
    eg_act(p, 0, words);
    c[EG_C_CARRIED] = eg_carried(p->st);
    return words;
}

/* eg_flush of the queue in `p`, then eg_act. */
int eg_run_flush(struct eg_params *p) {
    if (p->fresh) {
        table_drop(p->table);
        p->fresh = 0;
    }
    int words = eg_flush(p->st, p->len, p->next, p->skip, p->ev);
    eg_act(p, 0, words);
    return words;
}

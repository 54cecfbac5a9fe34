/* The VTEP's ingress drain in C (issues 15 and 19): the per-datagram work of
 * `HotLoop._drain_udp`, merging (the checksummed socket) or not (the lone-frame socket),
 * nothing else. Plain C against libc, called through ctypes (the GIL is released for each
 * call); the Python path stays and decides everything that is not per frame.
 *
 * One call of in_step() runs until there is something for Python to do and says what in the
 * context's record. A run or frames whose source MAC has a slot (in_learn: Python made it for
 * the MAC's FDB entry) and needs no learning (a given entry, or one learned at this sender) is
 * counted in the slot and written at once, without a record; Python folds the slots into the
 * entries at the drain's end (in_fold) and drops a network's slots when its FDB changed
 * (in_forget). The records:
 *   IN_RUN     a run of in-order TCP segments is complete (its network, sender, source MAC,
 *              segment count, octets): Python counts it on the FDB entry, learns, counts
 *              rx_merged_writes; the NEXT in_step() writes it (so the counters move before the
 *              write, as in Python) as one GSO super-frame, or the lone segment as it came;
 *   IN_FRAMES  a run of consecutive datagrams the merge does not take but `switching.ingress`
 *              would deliver unchanged (member sender, I flag, the strict rule, a known VNI,
 *              the inner frame within MTU + 14 + 4), of one network, sender and inner source
 *              MAC: count, octets, the first frame's octets, whether one goes to the latency
 *              queue. Python does `ingress`'s accounting (FDB entry, learning); the NEXT
 *              in_step() writes them as `_drain_udp` does: IPv4 TCP to the TAP queue, the rest
 *              to the latency queue, each `PLAIN_VNET_HDR + inner` (or the inner frame);
 *   IN_PY      any other datagram (malformed, unknown VNI, too big, ...): Python hands it to
 *              `switching.ingress` exactly as its own drain does; the pending run or frames
 *              were written before (the TAP sees the frames in the order they came);
 *   IN_TAPERR  the last write failed (Python counts rx_drop_tap_error for its segments, or
 *              for the frames whose write failed);
 *   IN_DONE    EAGAIN, the budget, or a receive error: the drain is over (the record carries
 *              the datagrams from non-members and the receive errors to count, whether frames
 *              counted in slots went to a latency queue, and how many slots counted).
 * The merge rules are `_drain_udp`'s, octet for octet: IPv4 without options, TCP flags exactly
 * ACK to start a run, payload present, lengths consistent, a known network with a virtio-net
 * header; the following segments repeat the first one's headers but for the IPv4 id and
 * checksum and the TCP checksum, with the sequence number advanced (a wrap-around ends the
 * run); a shorter last segment, with or without PSH, joins and ends the run; 64 KiB at most.
 * Payload iovecs point into the receive buffers (no copies); a run spanning more receive
 * buffers than the pool holds is copied into a spill buffer once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common.h"

/* Receive buffers a pending run may point into before its payloads are copied to the spill
 * buffer: a run of 64 KiB spans 2-3 GRO buffers from an agent, more from a kernel sender. */
#define IN_NBUF 16
/* The IPv4 total length is 16 bits: a super-frame stays below it (offload.IPV4_MAX_TOTAL). */
#define IN_IPV4_MAX_TOTAL 65535
/* Segments in one run at most: a 1-octet payload each under the 64 KiB cap. */
#define IN_MAX_SEGMENTS (IN_IPV4_MAX_TOTAL + 1)
/* Offsets in a VXLAN datagram: VXLAN 8, Ethernet 14, IPv4 20, TCP. */
#define IN_MIN_TCP_DATAGRAM (8 + 14 + 20 + 20)
#define IN_TCP_ACK 0x10
#define IN_TCP_PSH 0x08
#define IN_VNET_LEN 10

/* Frames in one IN_FRAMES run at most (one write each): bounds the latency a frame waits for
 * the frames behind it (a GRO buffer of 1400-octet datagrams holds 46). */
#define IN_MAX_FRAMES 64
/* VXLAN 8 + inner Ethernet 14: the shortest datagram `ingress` passes without `vxlan.decode`. */
#define IN_MIN_DATAGRAM 22
/* Inner frames may exceed the MTU by the Ethernet header and one VLAN tag (`ingress`). */
#define IN_L2_ALLOWANCE (14 + 4)

/* Source MACs a context counts itself: common.h's slot table (ACCEL_SLOTS). */

enum { IN_DONE = 0, IN_RUN = 1, IN_PY = 2, IN_TAPERR = 3, IN_FRAMES = 4 };

/* The ABI version the Python wrapper checks (fastingress.ABI). */
int in_abi(void) { return 3; }
/* The slot table's size: the Python side sizes its arrays by it (checked at load). */
int in_slots(void) { return ACCEL_SLOTS; }

struct in_net {
    uint32_t vni;    /* the three VNI octets, big-endian, in the low 24 bits */
    int32_t tap_fd;  /* the TAP queue TCP goes to (Network.tap_fd) */
    int32_t mtu;
    int32_t vnet_len;
    int32_t latency_fd;  /* every other frame's queue (Network.latency_fd) */
};

struct in_rec {
    int32_t kind, net, sender, count;
    int64_t bytes;   /* IN_RUN, IN_FRAMES: FDB rx_bytes (inner frames' octets) */
    uint64_t ptr;    /* IN_PY: the datagram */
    int32_t len;     /* IN_PY: its length; IN_FRAMES: the first inner frame's */
    /* woke: IN_FRAMES has latency-queue frames; IN_DONE: frames the context counted itself
     * did (what the "yield" policy wakes for) */
    int32_t not_member, rx_error, woke;
    uint8_t mac[8];  /* IN_RUN, IN_FRAMES: the inner source MAC */
};

struct in_ctx {
    struct in_rec rec;
    struct accel_slots slots;  /* the source MACs counted here (third count: merged writes) */
    int drain_woke;
    int fd, budget, strict, merge, finishing;
    struct in_net *nets;
    int nnets, last_net;
    uint32_t *members;
    int nmembers, last_member;
    uint8_t *bufs[IN_NBUF];
    uint32_t pinned;  /* receive buffers holding payloads of the pending run */
    int cur, cur_sender, empty_pending;
    size_t size, seg, pos;
    /* The pending run. */
    int p_active, p_net, p_sender, p_count;
    size_t p_hend, p_dlen, p_plen;
    int64_t p_total, p_cap;
    uint64_t p_seq;  /* the next sequence number; above 32 bits after a wrap: never matches */
    uint8_t p_head[104];
    struct iovec *iov;  /* [0] virtio-net header, [1] headers, [2...] payloads */
    uint8_t *spill;
    size_t spill_used;
    /* The write in_step() does first. */
    int w_pending, w_fd, w_net, w_count, w_iovcnt;
    uint8_t w_vnet[IN_VNET_LEN];
    uint8_t w_headers[104];
    /* The pending IN_FRAMES run (its frames point into pinned receive buffers). */
    int f_count, f_net, f_sender, f_woke;
    int64_t f_bytes;
    uint8_t f_mac[6];
    const uint8_t *f_ptr[IN_MAX_FRAMES];
    int32_t f_len[IN_MAX_FRAMES], f_fd[IN_MAX_FRAMES];
    int f_write;  /* the next in_step() writes the frames */
};

void in_free(struct in_ctx *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < IN_NBUF; i++)
        free(c->bufs[i]);
    free(c->nets);
    free(c->members);
    free(c->iov);
    free(c->spill);
    accel_slots_free(&c->slots);
    free(c);
}

struct in_ctx *in_new(void)
{
    struct in_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    int ok = 1;
    for (int i = 0; i < IN_NBUF; i++)
        ok &= (c->bufs[i] = malloc(ACCEL_READ_SIZE)) != NULL;
    c->iov = calloc(IN_MAX_SEGMENTS + 2, sizeof *c->iov);
    c->spill = malloc(IN_IPV4_MAX_TOTAL + 1);
    ok &= accel_slots_init(&c->slots) == 0;
    if (!ok || c->iov == NULL || c->spill == NULL) {
        in_free(c);
        return NULL;
    }
    c->cur = -1;
    return c;
}

struct in_rec *in_record(struct in_ctx *c) { return &c->rec; }

/* Replace the tables: networks (VNI, TAP fd, MTU, virtio-net header length) and member
 * addresses (network order). Only between drains. Returns 0, or -1 without memory. */
int in_set_tables(struct in_ctx *c, const struct in_net *nets, int nnets,
                  const uint32_t *members, int nmembers)
{
    return ACCEL_SET_TABLES(c, nets, nnets, members, nmembers);
}

/* Start a drain of socket `fd` with a budget of `budget` datagrams; `merge`: TCP runs are
 * merged (the checksummed socket), else every datagram is delivered as it came. */
void in_begin(struct in_ctx *c, int fd, int budget, int strict, int merge)
{
    c->fd = fd;
    c->budget = budget;
    c->strict = strict;
    c->merge = merge;
    c->finishing = 0;
    c->drain_woke = 0;
    c->rec.not_member = c->rec.rx_error = 0;
}

/* Count network `net`'s source `mac` here from now on: its FDB entry's remote is member
 * `sender` (-1: none), `learned` whether the entry is learned (frames from another member
 * then go to Python, which learns). Between in_step calls. Returns the slot (the same one
 * again for a MAC already held, with the new facts), or -1 when the table is full. */
int in_learn(struct in_ctx *c, int net, const uint8_t *mac, int sender, int learned)
{
    return accel_slot_learn(&c->slots, net, mac, sender, learned);
}

/* Stop counting the MACs of network `net` (-1: of every network); what they counted and was
 * not folded is lost (Python folds first). Between in_step calls. */
void in_forget(struct in_ctx *c, int net) { accel_slot_forget(&c->slots, net); }

/* Hand over what the slots counted since the last fold (up to `max` slots: their indexes, frames,
 * octets, merged writes) and start again from zero. Returns how many slots. */
int in_fold(struct in_ctx *c, int32_t *slots, int64_t *frames, int64_t *bytes, int64_t *merged,
            int max)
{
    return accel_slot_fold(&c->slots, slots, frames, bytes, merged, max);
}

static int find_net(struct in_ctx *c, const uint8_t *vni)
{
    uint32_t key = (uint32_t)vni[0] << 16 | (uint32_t)vni[1] << 8 | vni[2];
    return ACCEL_LOOKUP(c->nets, c->nnets, c->last_net, item_->vni == key);
}

static int find_member(struct in_ctx *c, uint32_t addr)
{
    return ACCEL_LOOKUP(c->members, c->nmembers, c->last_member, *item_ == addr);
}

/* Whether datagram header `d` continues the pending run: every octet of the first segment's
 * headers but the IPv4 id (26-27) and checksum (32-33), the TCP checksum (58-59) and the
 * rebuilt ones: the IPv4 total length (24-25) is `total_len`, the sequence number (46-49) the
 * next expected, the TCP flags (55) `flags`. */
static int continues(const struct in_ctx *c, const uint8_t *d, uint32_t total_len, uint8_t flags)
{
    const uint8_t *f = c->p_head;
    size_t hend = c->p_hend;
    return c->p_seq <= 0xFFFFFFFFu && be32(d + 46) == c->p_seq && be16(d + 24) == total_len &&
           d[55] == flags && memcmp(d, f, 24) == 0 && memcmp(d + 28, f + 28, 4) == 0 &&
           memcmp(d + 34, f + 34, 12) == 0 && memcmp(d + 50, f + 50, 5) == 0 &&
           memcmp(d + 56, f + 56, 2) == 0 && memcmp(d + 60, f + 60, hend - 60) == 0;
}

/* Take payload [p, p+len) of the current buffer into the pending run. */
static void take(struct in_ctx *c, const uint8_t *p, size_t len)
{
    struct iovec *v = &c->iov[2 + c->p_count++];
    v->iov_base = (void *)p;
    v->iov_len = len;
    c->pinned |= 1u << c->cur;
}

/* End the pending run: prepare its write (done by the next in_step) and fill the record. */
static int end_run(struct in_ctx *c, int64_t total, int push)
{
    struct in_rec *r = &c->rec;
    const struct in_net *net = &c->nets[c->p_net];
    size_t hlen = c->p_hend - 8;
    const uint8_t *first = c->p_head + 8;
    c->p_active = 0;
    r->kind = IN_RUN;
    r->net = c->p_net;
    r->sender = c->p_sender;
    r->count = c->p_count;
    r->bytes = (int64_t)c->p_count * (int64_t)hlen + total;
    memcpy(r->mac, first + 6, 6);
    c->w_pending = 1;
    c->w_fd = net->tap_fd;
    c->w_net = c->p_net;
    c->w_count = c->p_count;
    c->w_iovcnt = c->p_count + 2;
    if (c->p_count == 1) {
        /* The lone segment as it came: the kernel checks its checksums. */
        memset(c->w_vnet, 0, IN_VNET_LEN);
        memcpy(c->w_headers, first, hlen);
    } else {
        /* offload.vnet_header(gso=True) and offload.super_frame_headers. */
        uint8_t *v = c->w_vnet, *h = c->w_headers, *ip = h + 14, *tcp = h + 34;
        uint32_t tcp_len = (uint32_t)(hlen - 34 + (size_t)total);
        v[0] = 1;  /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
        v[1] = 1;  /* VIRTIO_NET_HDR_GSO_TCPV4 */
        v[2] = (uint8_t)hlen, v[3] = (uint8_t)(hlen >> 8);
        v[4] = (uint8_t)c->p_plen, v[5] = (uint8_t)(c->p_plen >> 8);
        v[6] = 34, v[7] = 0, v[8] = 16, v[9] = 0;
        memcpy(h, first, hlen);
        ipv4_rebuild(ip, 20 + tcp_len);
        put16(tcp + 16, pseudo_sum(ip, 6, tcp_len));
        if (push)
            tcp[13] |= IN_TCP_PSH;
    }
    c->iov[0].iov_base = c->w_vnet;
    c->iov[0].iov_len = IN_VNET_LEN;
    c->iov[1].iov_base = c->w_headers;
    c->iov[1].iov_len = hlen;
    return IN_RUN;
}

/* The network of a run datagram `d` of `n` octets may start, or -1. */
static int run_net(struct in_ctx *c, const uint8_t *d, size_t n)
{
    if (!(n > IN_MIN_TCP_DATAGRAM && (d[0] & 0x08) && d[20] == 0x08 && d[21] == 0x00 &&
          d[22] == 0x45 && d[31] == 6 && d[55] == IN_TCP_ACK && !((d[28] & 0x3F) || d[29])))
        return -1;
    if (c->strict && !(d[0] == 0x08 && d[1] == 0 && d[2] == 0 && d[3] == 0 && d[7] == 0))
        return -1;
    int i = find_net(c, d + 4);
    if (i < 0)
        return -1;
    const struct in_net *net = &c->nets[i];
    size_t hend = 42 + (size_t)(d[54] >> 4) * 4;
    if (!(net->vnet_len && hend >= 62 && hend < n && (int64_t)n - 8 <= (int64_t)net->mtu + 14 &&
          be16(d + 24) == n - 22))
        return -1;
    return i;
}

/* Start a run of network `i` with datagram `d` of `n` octets. */
static void start_run(struct in_ctx *c, const uint8_t *d, size_t n, int i)
{
    size_t hend = 42 + (size_t)(d[54] >> 4) * 4;
    c->p_active = 1;
    c->p_net = i;
    c->p_sender = c->cur_sender;
    c->p_hend = hend;
    c->p_dlen = n;
    c->p_plen = n - hend;
    c->p_total = (int64_t)c->p_plen;
    c->p_cap = IN_IPV4_MAX_TOTAL - ((int64_t)hend - 22) - (int64_t)c->p_plen;
    c->p_seq = (uint64_t)be32(d + 46) + c->p_plen;
    c->p_count = 0;
    memcpy(c->p_head, d, hend);
    take(c, d + hend, n - hend);
}

/* The network whose TAP `switching.ingress` would give datagram `d` of `n` octets unchanged
 * (its fast path: I flag, the strict rule, a known VNI, not too big), or -1: Python decides. */
static int frame_net(struct in_ctx *c, const uint8_t *d, size_t n)
{
    if (!(n >= IN_MIN_DATAGRAM && (d[0] & 0x08)))
        return -1;
    if (c->strict && !(d[0] == 0x08 && d[1] == 0 && d[2] == 0 && d[3] == 0 && d[7] == 0))
        return -1;
    int i = find_net(c, d + 4);
    if (i < 0 || (int64_t)n - 8 > (int64_t)c->nets[i].mtu + IN_L2_ALLOWANCE)
        return -1;
    return i;
}

/* Add datagram `d` of `n` octets of network `i` to the pending frames. */
static void add_frame(struct in_ctx *c, const uint8_t *d, size_t n, int i)
{
    const struct in_net *net = &c->nets[i];
    const uint8_t *inner = d + 8;
    size_t len = n - 8;
    /* `_drain_udp`: IPv4 TCP to the bulk queue, the rest to the latency queue. */
    int tcp = len >= 24 && inner[12] == 0x08 && inner[13] == 0x00 && inner[23] == 6;
    int k = c->f_count++;
    if (k == 0) {
        c->f_net = i;
        c->f_sender = c->cur_sender;
        c->f_bytes = 0;
        c->f_woke = 0;
        memcpy(c->f_mac, inner + 6, 6);
    }
    c->f_ptr[k] = inner;
    c->f_len[k] = (int32_t)len;
    c->f_fd[k] = tcp ? net->tap_fd : net->latency_fd;
    c->f_woke |= !tcp && net->latency_fd != net->tap_fd;
    c->f_bytes += (int64_t)len;
    c->pinned |= 1u << c->cur;
}

/* Whether network `i`'s frame at `d` (a datagram) continues the pending frames. */
static int frames_continue(const struct in_ctx *c, const uint8_t *d, int i)
{
    return c->f_count < IN_MAX_FRAMES && c->f_net == i && c->f_sender == c->cur_sender &&
           memcmp(c->f_mac, d + 8 + 6, 6) == 0;
}

/* End the pending frames: the record now, the writes at the next in_step(). */
static int end_frames(struct in_ctx *c)
{
    struct in_rec *r = &c->rec;
    r->kind = IN_FRAMES;
    r->net = c->f_net;
    r->sender = c->f_sender;
    r->count = c->f_count;
    r->bytes = c->f_bytes;
    r->len = c->f_len[0];
    r->woke = c->f_woke;
    memcpy(r->mac, c->f_mac, 6);
    c->f_write = 1;
    return IN_FRAMES;
}

/* Write the frames end_frames() reported. 0, or IN_TAPERR with the failures' count. */
static int write_frames(struct in_ctx *c)
{
    static const uint8_t plain_vnet[16];
    size_t vnet_len = (size_t)c->nets[c->f_net].vnet_len;
    int failed = 0;
    for (int k = 0; k < c->f_count; k++) {
        struct iovec v[2] = {{(void *)plain_vnet, vnet_len},
                             {(void *)c->f_ptr[k], (size_t)c->f_len[k]}};
        ssize_t done;
        do
            done = vnet_len ? writev(c->f_fd[k], v, 2) : writev(c->f_fd[k], v + 1, 1);
        while (done < 0 && errno == EINTR);
        failed += done < 0;
    }
    c->f_write = 0;
    c->f_count = 0;
    c->pinned = 0;
    if (!failed)
        return 0;
    c->rec.kind = IN_TAPERR;
    c->rec.net = c->f_net;
    c->rec.count = failed;
    return IN_TAPERR;
}

/* Copy the pending run's payloads out of the receive buffers, so they can all be reused. */
static void spill(struct in_ctx *c)
{
    for (int i = 0; i < c->p_count; i++) {
        struct iovec *v = &c->iov[2 + i];
        uint8_t *base = v->iov_base;
        if (base >= c->spill && base < c->spill + IN_IPV4_MAX_TOTAL + 1)
            continue;
        memcpy(c->spill + c->spill_used, base, v->iov_len);
        v->iov_base = c->spill + c->spill_used;
        c->spill_used += v->iov_len;
    }
    c->pinned = 0;
}

/* One receive into a free buffer. 1: a buffer to work on; 0: the drain ends. */
static int receive(struct in_ctx *c)
{
    for (;;) {
        if (c->budget <= 0)
            return 0;
        int b = -1;
        for (int i = 0; i < IN_NBUF; i++)
            if (!(c->pinned & (1u << i))) {
                b = i;
                break;
            }
        if (b < 0) {
            spill(c);
            b = 0;
        }
        struct sockaddr_in from;
        size_t seg;
        ssize_t got = accel_receive(c->fd, c->bufs[b], &from, &seg);
        if (got < 0) {
            c->rec.rx_error += accel_receive_failed();
            return 0;
        }
        size_t size = (size_t)got;
        int datagrams = accel_datagrams(size, seg);
        c->budget -= datagrams;
        int sender = from.sin_family == AF_INET ? find_member(c, from.sin_addr.s_addr) : -1;
        if (sender < 0) {
            c->rec.not_member += datagrams;
            continue;
        }
        c->cur = b;
        c->cur_sender = sender;
        c->size = size;
        c->seg = seg;
        c->pos = 0;
        c->empty_pending = size == 0;
        return 1;
    }
}

/* Write the run prepared by end_run. 0, or IN_TAPERR with the record filled. */
static int write_run(struct in_ctx *c)
{
    c->w_pending = 0;
    ssize_t done;
    do
        done = writev(c->w_fd, c->iov, c->w_iovcnt);
    while (done < 0 && errno == EINTR);
    c->pinned = 0;
    c->spill_used = 0;
    if (done >= 0)
        return 0;
    c->rec.kind = IN_TAPERR;
    c->rec.net = c->w_net;
    c->rec.count = c->w_count;
    return IN_TAPERR;
}

/* The run or frames end_run or end_frames just reported: counted here when their source MAC
 * has a slot and it needs no learning (a given entry, or a learned one at this sender), and
 * then written at once. 0: done, the drain goes on; IN_TAPERR: the write failed (the record
 * says so); else the record's kind: Python counts it and the next in_step writes it. */
static int settle(struct in_ctx *c)
{
    struct in_rec *r = &c->rec;
    int s = accel_slot_find(&c->slots, r->net, r->mac);
    if (s < 0)
        return r->kind;
    const struct accel_slot *slot = &c->slots.slots[s];
    if (slot->learned && slot->sender != r->sender)
        return r->kind;
    accel_slot_count(&c->slots, s, r->count, r->bytes, r->kind == IN_RUN && r->count > 1);
    if (r->kind == IN_RUN)
        return write_run(c);
    c->drain_woke |= r->woke;
    return write_frames(c);
}

/* settle's "all done here". */
#define IN_SETTLED 0

static int settle_run(struct in_ctx *c, int64_t total, int push)
{
    end_run(c, total, push);
    return settle(c);
}

static int settle_frames(struct in_ctx *c)
{
    end_frames(c);
    return settle(c);
}

int in_step(struct in_ctx *c)
{
    int k;
    struct in_rec *r = &c->rec;
    if (c->w_pending && write_run(c))
        return IN_TAPERR;
    if (c->f_write && write_frames(c))
        return IN_TAPERR;
    for (;;) {
        if (c->finishing) {
            c->finishing = 0;
            r->kind = IN_DONE;
            r->woke = c->drain_woke;
            r->count = c->slots.ndirty;  /* slots Python folds */
            return IN_DONE;
        }
        if (c->cur < 0 || (c->pos >= c->size && !c->empty_pending)) {
            /* The pending frames hold every receive buffer: write them before the next. */
            if (c->f_count && c->pinned == (1u << IN_NBUF) - 1) {
                if ((k = settle_frames(c)) != IN_SETTLED)
                    return k;
                continue;
            }
            c->cur = -1;
            if (!receive(c)) {
                c->finishing = 1;
                if (c->p_active && (k = settle_run(c, c->p_total, 0)) != IN_SETTLED)
                    return k;
                if (c->f_count && (k = settle_frames(c)) != IN_SETTLED)
                    return k;
                continue;
            }
        }
        const uint8_t *data = c->bufs[c->cur];
        size_t s = c->pos, e = s + c->seg < c->size ? s + c->seg : c->size, n = e - s;
        const uint8_t *d = data + s;
        if (c->p_active) {
            if (n == c->p_dlen && c->p_total <= c->p_cap &&
                continues(c, d, (uint32_t)(c->p_dlen - 22), IN_TCP_ACK)) {
                take(c, d + c->p_hend, n - c->p_hend);
                c->p_total += (int64_t)c->p_plen;
                c->p_seq += c->p_plen;
                c->pos = e;
                continue;
            }
            if (c->p_hend < n && n <= c->p_dlen && c->p_total <= c->p_cap) {
                int plain = continues(c, d, (uint32_t)(n - 22), IN_TCP_ACK);
                if (plain || continues(c, d, (uint32_t)(n - 22), IN_TCP_ACK | IN_TCP_PSH)) {
                    take(c, d + c->p_hend, n - c->p_hend);
                    c->pos = e;
                    if ((k = settle_run(c, c->p_total + (int64_t)(n - c->p_hend), !plain)) !=
                        IN_SETTLED)
                        return k;
                    continue;
                }
            }
            /* The run ends before this segment, which is looked at again after the write. */
            if ((k = settle_run(c, c->p_total, 0)) != IN_SETTLED)
                return k;
            continue;
        }
        int i = c->merge ? run_net(c, d, n) : -1;
        if (i >= 0) {
            /* The frames before it are written first; it is looked at again then. */
            if (c->f_count) {
                if ((k = settle_frames(c)) != IN_SETTLED)
                    return k;
                continue;
            }
            start_run(c, d, n, i);
            c->pos = e;
            continue;
        }
        i = frame_net(c, d, n);
        if (i >= 0 && (!c->f_count || frames_continue(c, d, i))) {
            add_frame(c, d, n, i);
            c->pos = e;
            c->empty_pending = 0;
            continue;
        }
        if (c->f_count) {
            if ((k = settle_frames(c)) != IN_SETTLED)
                return k;
            continue;
        }
        c->pos = e;
        c->empty_pending = 0;
        r->kind = IN_PY;
        r->sender = c->cur_sender;
        r->ptr = (uint64_t)(uintptr_t)d;
        r->len = (int32_t)n;
        return IN_PY;
    }
}

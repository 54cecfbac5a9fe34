/* Offload mode's ingress drain in C (issue 15): the per-datagram work of
 * `HotLoop._drain_offload`: receive (UDP_GRO buffers of chunks) until EAGAIN or the budget,
 * parse chunk headers, reassemble super-frames per sender exactly as `chunks.Reassembler.feed`
 * does (same limits, drop rules and counters), merge consecutive datagrams of one UDP flow into
 * one GSO_UDP_L4 write as `offload.UdpRuns` does, and write each result to its TAP queue as
 * `HotLoop._deliver_whole` does. Plain C against libc, called through ctypes (the GIL is
 * released per call); Python keeps the FDB accounting and learning of the MACs it has no slot for.
 *
 * One of_step() call runs until Python has something to do and says what in the record:
 *   OF_FRAME   a frame is about to be written (network, sender, inner source MAC, octets
 *              without the virtio-net header, whether it goes to the latency queue): Python
 *              counts it (FDB entry, learning, rx_offload_frames); the NEXT of_step() writes it;
 *   OF_RUNT    a frame shorter than virtio-net + Ethernet headers (rx_offload_runt);
 *   OF_TAPERR  the last write failed (rx_drop_tap_error);
 *   OF_DONE    EAGAIN, the budget, or a receive error: the drain is over; the record's counters
 *              (reassembly, UDP merge, host) are the drain's, for Python to add; whether a frame
 *              counted in a slot went to a latency queue; how many slots to fold.
 * A frame whose source MAC has a slot (of_learn: Python made it for the FDB entry after counting
 * one of its frames) and needs no learning is counted in the slot and written without a record
 * (ingress.c's rule; the table is common.h's); Python folds the slots into the entries at the
 * drain's end and drops a network's slots when its FDB changed.
 * Reassembly state (at most max_pending frames, the last RECENT_DONE completed ids) lives here
 * across drains; of_expire() is `Reassembler.expire` for it, called with the Python one's.
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

/* chunks.HEADER_LEN, MAX_CHUNKS, RECENT_DONE. */
#define OF_HEADER_LEN 16
#define OF_MAX_CHUNKS 255
#define OF_RECENT_DONE 256
/* The largest frame a context reassembles (count x chunk size): a super-frame is at most 64 KiB
 * and its headers; chunk headers that claim more (255 chunks of 64 KiB would be 16 MiB held per
 * pending frame) are counted as offload_bad_size, and the frame given up. */
#define OF_MAX_FRAME (1 << 20)
/* The most pending frames a context takes (Reassembler.max_pending is 64 by default). */
#define OF_PENDING_CAP 1024
/* offload.py: virtio-net header, the IPv4, UDP and payload offsets in a virtio-net header +
 * frame, the merge limits. */
#define OF_VNET_LEN 10
#define OF_IP_AT 24
#define OF_UDP_AT 44
#define OF_PAYLOAD_AT 52
#define OF_MERGE_MAX_SEGMENTS 64
#define OF_MERGE_MAX_PAYLOAD (65535 - 20 - 8)
/* The merge key: Ethernet + IPv4 0-1 (16), IPv4 6-9 (4), addresses and ports (12). */
#define OF_KEY_LEN 32

enum { OF_DONE = 0, OF_FRAME = 1, OF_RUNT = 2, OF_TAPERR = 3 };
/* Counter slots of the record (fastoffload.COUNTERS, in this order). */
enum {
    C_FRAMES, C_LOST, C_DUPLICATE, C_SHORT, C_BAD_MAGIC, C_BAD_HEADER, C_BAD_SIZE,
    C_UDP_MERGED, C_UDP_MERGED_WRITES, C_NOT_MEMBER, C_RX_ERROR, C_REFUSED, C_COUNT
};

/* The ABI version the Python wrapper checks (fastoffload.ABI). */
int of_abi(void) { return 4; }
/* The slot table's size: the Python side sizes its arrays by it (checked at load). */
int of_slots(void) { return ACCEL_SLOTS; }

struct of_net {
    uint32_t vni;        /* low 24 bits */
    int32_t tap_fd;      /* TCP frames' queue (Network.tap_fd) */
    int32_t latency_fd;  /* every other frame's (Network.latency_fd) */
    int32_t pad;
};

struct of_rec {
    int32_t kind, net, sender, woke;
    int64_t bytes;  /* OF_FRAME: the frame's octets without the virtio-net header */
    uint8_t mac[8];
    /* OF_DONE: whether any of the counters is not zero; how many slots Python folds */
    int32_t counted, slots;
    int64_t counters[C_COUNT];
};

struct of_entry {
    int used, count, got;
    uint32_t sender, vni, fid;
    int64_t size;  /* octets of every chunk but the last, -1 until one of those is seen */
    uint64_t seq;  /* creation order: the oldest is evicted first */
    uint8_t *buf;  /* count * size octets once size is known: the frame in place */
    uint8_t *last; /* the last chunk, while size is not known yet */
    size_t last_len;
    uint8_t have[OF_MAX_CHUNKS];
};

struct of_key {
    uint32_t sender, vni, fid;
};

/* A frame waiting to be delivered: contiguous, maybe owning its buffer. */
struct of_out {
    const uint8_t *ptr;
    size_t len;
    uint8_t *own;
    int sender;
    uint32_t vni;
};

struct of_ctx {
    struct of_rec rec;
    /* The source MACs counted here (common.h; third count: rx_offload_frames), whether a frame
     * counted here went to a latency queue this drain. */
    struct accel_slots slots;
    int drain_woke;
    int fd, budget, merge, finished;
    struct of_net *nets;
    int nnets, last_net;
    uint32_t *members;
    int nmembers, last_member;
    uint8_t *buf;  /* the receive buffer */
    size_t size, seg, pos;
    int cur_sender;
    uint32_t cur_addr;
    /* Reassembly. */
    struct of_entry *entries;
    int max_pending, npending, last_entry;
    uint64_t seq;
    struct of_key done[OF_RECENT_DONE];
    int ndone, done_at;
    struct of_key *marked;
    int nmarked;
    /* UDP runs (two buffers: a flushed run waits for its write while the next one fills). */
    uint8_t *run_buf[2];
    int run_cur, run_parts, run_short, run_sender;
    uint32_t run_vni;
    size_t run_size, run_total, run_first_len;
    uint8_t run_key[OF_KEY_LEN];
    /* Frames to deliver, in order (at most two: a flushed run and a frame alone). */
    struct of_out q[2];
    int qn;
    /* The write of_step() does first. */
    int w_pending, w_fd, w_net;
    const uint8_t *w_ptr;
    size_t w_len;
    uint8_t *w_own;
};

static void free_entry(struct of_entry *e)
{
    free(e->buf);
    free(e->last);
    e->buf = e->last = NULL;
    e->used = 0;
}

void of_free(struct of_ctx *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->max_pending; i++)
        free_entry(&c->entries[i]);
    for (int i = 0; i < c->qn; i++)
        free(c->q[i].own);
    free(c->w_own);
    free(c->entries);
    free(c->marked);
    free(c->nets);
    free(c->members);
    free(c->buf);
    free(c->run_buf[0]);
    free(c->run_buf[1]);
    accel_slots_free(&c->slots);
    free(c);
}

/* A context for `max_pending` frames in reassembly at once (1..OF_PENDING_CAP), or NULL. */
struct of_ctx *of_new(int max_pending)
{
    if (max_pending < 1 || max_pending > OF_PENDING_CAP)
        return NULL;
    struct of_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->max_pending = max_pending;
    c->entries = calloc((size_t)max_pending, sizeof *c->entries);
    c->marked = calloc((size_t)max_pending, sizeof *c->marked);
    c->buf = malloc(ACCEL_READ_SIZE);
    c->run_buf[0] = malloc(ACCEL_READ_SIZE);
    c->run_buf[1] = malloc(ACCEL_READ_SIZE);
    int slots = accel_slots_init(&c->slots);
    if (!c->entries || !c->marked || !c->buf || !c->run_buf[0] || !c->run_buf[1] || slots) {
        of_free(c);
        return NULL;
    }
    return c;
}

struct of_rec *of_record(struct of_ctx *c) { return &c->rec; }

int of_pending(struct of_ctx *c) { return c->npending; }

/* Replace the tables: the networks that take offload (VNI, TAP queues) and the member
 * addresses (network order). Only between drains. 0, or -1 without memory. */
int of_set_tables(struct of_ctx *c, const struct of_net *nets, int nnets,
                  const uint32_t *members, int nmembers)
{
    return ACCEL_SET_TABLES(c, nets, nnets, members, nmembers);
}

/* Start a drain of socket `fd`: `budget` datagrams, UDP runs merged when `merge`. */
void of_begin(struct of_ctx *c, int fd, int budget, int merge)
{
    c->fd = fd;
    c->budget = budget;
    c->merge = merge;
    c->finished = 0;
    c->size = c->pos = 0;
    c->drain_woke = 0;
    memset(c->rec.counters, 0, sizeof c->rec.counters);
}

/* Count network `net`'s source `mac` here from now on (in_learn's rules: its FDB entry's remote
 * is member `sender`, -1 for none; a `learned` entry's frames from another member go to Python).
 * Between of_step calls. The slot, or -1 when the table is full. */
int of_learn(struct of_ctx *c, int net, const uint8_t *mac, int sender, int learned)
{
    return accel_slot_learn(&c->slots, net, mac, sender, learned);
}

/* Stop counting the MACs of network `net` (-1: all); Python folds first. */
void of_forget(struct of_ctx *c, int net) { accel_slot_forget(&c->slots, net); }

/* Hand over what the slots counted since the last fold (in_fold; the third count is the
 * frames delivered, rx_offload_frames). How many slots. */
int of_fold(struct of_ctx *c, int32_t *slots, int64_t *frames, int64_t *bytes, int64_t *frames_net,
            int max)
{
    return accel_slot_fold(&c->slots, slots, frames, bytes, frames_net, max);
}

static int find_member(struct of_ctx *c, uint32_t addr)
{
    return ACCEL_LOOKUP(c->members, c->nmembers, c->last_member, *item_ == addr);
}

static int find_net(struct of_ctx *c, uint32_t vni)
{
    return ACCEL_LOOKUP(c->nets, c->nnets, c->last_net, item_->vni == vni);
}

/* -- the output queue and UDP runs (offload.UdpRuns) ------------------------------------- */

static void push(struct of_ctx *c, const uint8_t *ptr, size_t len, uint8_t *own, int sender,
                 uint32_t vni)
{
    struct of_out *o = &c->q[c->qn++];
    o->ptr = ptr;
    o->len = len;
    o->own = own;
    o->sender = sender;
    o->vni = vni;
}

/* offload.udp_merge_key: 1 and the key in `key` when `d` may be merged. */
static int merge_key(const uint8_t *d, size_t n, uint8_t *key)
{
    static const uint8_t partial[OF_VNET_LEN] = {1, 0, 0, 0, 0, 0, 34, 0, 6, 0};
    if (n <= OF_PAYLOAD_AT || memcmp(d, partial, OF_VNET_LEN) != 0)
        return 0;
    if (d[22] != 0x08 || d[23] != 0x00 || d[24] != 0x45 || d[OF_IP_AT + 9] != 17)
        return 0;
    if ((d[OF_IP_AT + 6] & 0x3F) || d[OF_IP_AT + 7])
        return 0;
    size_t total = n - OF_IP_AT;
    if (be16(d + OF_IP_AT + 2) != total || be16(d + OF_UDP_AT + 4) != total - 20)
        return 0;
    memcpy(key, d + OF_VNET_LEN, 16);
    memcpy(key + 16, d + OF_IP_AT + 6, 4);
    memcpy(key + 20, d + OF_IP_AT + 12, 12);
    return 1;
}

/* UdpRuns.flush: the open run onto the queue (one datagram unchanged; more as one
 * udp_super_frame, built in place: the first datagram's headers and payload, then the rest). */
static void run_flush(struct of_ctx *c)
{
    if (c->run_parts == 0)
        return;
    uint8_t *b = c->run_buf[c->run_cur];
    size_t len = c->run_first_len;
    if (c->run_parts > 1) {
        uint32_t udp_len = (uint32_t)(8 + c->run_total);
        uint8_t *ip = b + OF_IP_AT, *udp = b + OF_UDP_AT;
        c->rec.counters[C_UDP_MERGED] += c->run_parts;
        c->rec.counters[C_UDP_MERGED_WRITES] += 1;
        b[0] = 1;  /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
        b[1] = 5;  /* VIRTIO_NET_HDR_GSO_UDP_L4 */
        b[2] = OF_PAYLOAD_AT - OF_VNET_LEN, b[3] = 0;
        b[4] = (uint8_t)c->run_size, b[5] = (uint8_t)(c->run_size >> 8);
        b[6] = 34, b[7] = 0, b[8] = 6, b[9] = 0;
        ipv4_rebuild(ip, 20 + udp_len);
        put16(udp + 4, udp_len);
        put16(udp + 6, pseudo_sum(ip, 17, udp_len));
        len = OF_PAYLOAD_AT + c->run_total;
    }
    push(c, b, len, NULL, c->run_sender, c->run_vni);
    c->run_parts = 0;
    c->run_short = 0;
    c->run_cur ^= 1;
}

/* UdpRuns.add: a complete frame (`own`: its buffer, freed once no longer needed). */
static void add_frame(struct of_ctx *c, int sender, uint32_t vni, const uint8_t *d, size_t n,
                      uint8_t *own)
{
    uint8_t key[OF_KEY_LEN];
    if (!c->merge || !merge_key(d, n, key)) {
        run_flush(c);
        push(c, d, n, own, sender, vni);
        return;
    }
    size_t p = n - OF_PAYLOAD_AT;
    if (c->run_parts && (c->run_short || p > c->run_size || sender != c->run_sender ||
                         vni != c->run_vni || memcmp(key, c->run_key, OF_KEY_LEN) != 0 ||
                         c->run_parts >= OF_MERGE_MAX_SEGMENTS ||
                         c->run_total + p > OF_MERGE_MAX_PAYLOAD))
        run_flush(c);
    uint8_t *b = c->run_buf[c->run_cur];
    if (!c->run_parts) {
        c->run_sender = sender;
        c->run_vni = vni;
        memcpy(c->run_key, key, OF_KEY_LEN);
        c->run_size = p;
        c->run_total = 0;
        c->run_first_len = n;
        memcpy(b, d, n);
    } else {
        memcpy(b + OF_PAYLOAD_AT + c->run_total, d + OF_PAYLOAD_AT, p);
    }
    c->run_parts++;
    c->run_total += p;
    c->run_short = p < c->run_size;
    free(own);
}

/* -- reassembly (chunks.Reassembler.feed) -------------------------------------------------- */

static struct of_entry *find_entry(struct of_ctx *c, uint32_t sender, uint32_t vni, uint32_t fid)
{
    struct of_entry *e = &c->entries[c->last_entry];
    if (e->used && e->fid == fid && e->sender == sender && e->vni == vni)
        return e;
    for (int i = 0; i < c->max_pending; i++) {
        e = &c->entries[i];
        if (e->used && e->fid == fid && e->sender == sender && e->vni == vni) {
            c->last_entry = i;
            return e;
        }
    }
    return NULL;
}

static int is_done(struct of_ctx *c, uint32_t sender, uint32_t vni, uint32_t fid)
{
    for (int i = 0; i < c->ndone; i++) {
        const struct of_key *k = &c->done[i];
        if (k->fid == fid && k->sender == sender && k->vni == vni)
            return 1;
    }
    return 0;
}

static struct of_entry *new_entry(struct of_ctx *c, uint32_t sender, uint32_t vni, uint32_t fid,
                                  int count)
{
    int slot = -1;
    if (c->npending >= c->max_pending) {
        /* The oldest is given up, as Reassembler's popitem(last=False). */
        uint64_t oldest = UINT64_MAX;
        for (int i = 0; i < c->max_pending; i++)
            if (c->entries[i].used && c->entries[i].seq < oldest) {
                oldest = c->entries[i].seq;
                slot = i;
            }
        free_entry(&c->entries[slot]);
        c->npending--;
        c->rec.counters[C_LOST]++;
    } else {
        for (int i = 0; i < c->max_pending && slot < 0; i++)
            if (!c->entries[i].used)
                slot = i;
    }
    struct of_entry *e = &c->entries[slot];
    e->used = 1;
    e->count = count;
    e->got = 0;
    e->sender = sender;
    e->vni = vni;
    e->fid = fid;
    e->size = -1;
    e->seq = c->seq++;
    e->last_len = 0;
    memset(e->have, 0, (size_t)count);
    c->npending++;
    c->last_entry = slot;
    return e;
}

static void finish_key(struct of_ctx *c, uint32_t sender, uint32_t vni, uint32_t fid)
{
    struct of_key *k = &c->done[c->done_at];
    k->sender = sender;
    k->vni = vni;
    k->fid = fid;
    c->done_at = (c->done_at + 1) % OF_RECENT_DONE;
    if (c->ndone < OF_RECENT_DONE)
        c->ndone++;
    c->rec.counters[C_FRAMES]++;
}

/* One datagram `d` of `n` octets from member `sender` (address `addr`). */
static void feed(struct of_ctx *c, int sender, uint32_t addr, const uint8_t *d, size_t n)
{
    int64_t *ctr = c->rec.counters;
    if (n < OF_HEADER_LEN) {
        ctr[C_SHORT]++;
        return;
    }
    if (d[0] != 0 || d[1] != 'O' || d[2] != 'N' || d[3] != 1) {
        ctr[C_BAD_MAGIC]++;
        return;
    }
    int count = d[7], index = d[12];
    if (!count || index >= count || d[13] || d[14] || d[15]) {
        ctr[C_BAD_HEADER]++;
        return;
    }
    uint32_t vni = (uint32_t)d[4] << 16 | (uint32_t)d[5] << 8 | d[6];
    const uint8_t *payload = d + OF_HEADER_LEN;
    size_t plen = n - OF_HEADER_LEN;
    if (count == 1) {
        ctr[C_FRAMES]++;
        add_frame(c, sender, vni, payload, plen, NULL);
        return;
    }
    uint32_t fid = be32(d + 8);
    struct of_entry *e = find_entry(c, addr, vni, fid);
    if (e == NULL) {
        /* Pending and recently done frames are disjoint: a done key never opens again. */
        if (is_done(c, addr, vni, fid)) {
            ctr[C_DUPLICATE]++;
            return;
        }
        e = new_entry(c, addr, vni, fid, count);
    } else if (e->count != count) {
        ctr[C_BAD_HEADER]++;
        return;
    }
    if (e->have[index]) {
        ctr[C_DUPLICATE]++;
        return;
    }
    int last = index == count - 1;
    if (last) {
        if (e->size >= 0 && (int64_t)plen > e->size) {
            ctr[C_BAD_SIZE]++;
            return;
        }
    } else if (e->size < 0) {
        if (e->have[count - 1] && e->last_len > plen) {
            ctr[C_BAD_SIZE]++;
            return;
        }
        if ((size_t)count * plen > OF_MAX_FRAME) {
            ctr[C_BAD_SIZE]++;
            free_entry(e);
            c->npending--;
            return;
        }
        uint8_t *buf = malloc((size_t)count * plen + 1);
        if (buf == NULL) {
            ctr[C_LOST]++;  /* without memory the frame cannot complete */
            free_entry(e);
            c->npending--;
            return;
        }
        e->size = (int64_t)plen;
        e->buf = buf;
        if (e->have[count - 1]) {
            memcpy(buf + (size_t)(count - 1) * plen, e->last, e->last_len);
            free(e->last);
            e->last = NULL;
        }
    } else if ((int64_t)plen != e->size) {
        ctr[C_BAD_SIZE]++;
        return;
    }
    if (last) {
        e->last_len = plen;
        if (e->size < 0) {
            e->last = malloc(plen + 1);
            if (e->last == NULL) {
                ctr[C_LOST]++;
                free_entry(e);
                c->npending--;
                return;
            }
            memcpy(e->last, payload, plen);
        } else {
            memcpy(e->buf + (size_t)index * (size_t)e->size, payload, plen);
        }
    } else {
        memcpy(e->buf + (size_t)index * plen, payload, plen);
    }
    e->have[index] = 1;
    if (++e->got < count)
        return;
    uint8_t *frame = e->buf;
    size_t len = (size_t)(count - 1) * (size_t)e->size + e->last_len;
    e->buf = NULL;
    free_entry(e);
    c->npending--;
    finish_key(c, addr, vni, fid);
    add_frame(c, sender, vni, frame, len, frame);
}

/* Reassembler.expire for this context: give up the frames that were pending at the previous
 * call; returns how many. */
int of_expire(struct of_ctx *c)
{
    int stale = 0, n = 0;
    for (int i = 0; i < c->max_pending; i++) {
        struct of_entry *e = &c->entries[i];
        if (!e->used)
            continue;
        for (int j = 0; j < c->nmarked; j++) {
            const struct of_key *k = &c->marked[j];
            if (k->fid == e->fid && k->sender == e->sender && k->vni == e->vni) {
                free_entry(e);
                c->npending--;
                stale++;
                break;
            }
        }
    }
    for (int i = 0; i < c->max_pending; i++) {
        const struct of_entry *e = &c->entries[i];
        if (e->used) {
            c->marked[n].sender = e->sender;
            c->marked[n].vni = e->vni;
            c->marked[n].fid = e->fid;
            n++;
        }
    }
    c->nmarked = n;
    return stale;
}

/* Drop every pending frame (the drain moves to Python); returns how many. */
int of_clear(struct of_ctx *c)
{
    int n = c->npending;
    for (int i = 0; i < c->max_pending; i++)
        if (c->entries[i].used)
            free_entry(&c->entries[i]);
    c->npending = 0;
    c->nmarked = 0;
    return n;
}

/* -- the drain --------------------------------------------------------------------------------- */

/* The next receive into c->buf: 1, or 0 when the drain is over (EAGAIN, an error). */
static int receive(struct of_ctx *c)
{
    struct sockaddr_in from;
    for (;;) {
        size_t seg;
        ssize_t got = accel_receive(c->fd, c->buf, &from, &seg);
        if (got < 0) {
            c->rec.counters[C_RX_ERROR] += accel_receive_failed();
            return 0;
        }
        size_t size = (size_t)got;
        int datagrams = accel_datagrams(size, seg);
        c->budget -= datagrams;
        uint32_t addr = from.sin_family == AF_INET ? from.sin_addr.s_addr : 0;
        int sender = from.sin_family == AF_INET ? find_member(c, addr) : -1;
        if (sender < 0) {
            c->rec.counters[C_NOT_MEMBER] += datagrams;
            if (c->budget <= 0)
                return 0;
            continue;
        }
        if (size == 0) {
            c->rec.counters[C_SHORT]++;
            if (c->budget <= 0)
                return 0;
            continue;
        }
        c->size = size;
        c->seg = seg >= size ? size : seg;
        c->pos = 0;
        c->cur_sender = sender;
        c->cur_addr = addr;
        return 1;
    }
}

/* `_deliver_whole`'s checks for the queue's first frame: a record for Python, or -1 (refused:
 * counted here, nothing to write; or counted in its MAC's slot, the write pending). */
static int deliver(struct of_ctx *c)
{
    struct of_out o = c->q[0];
    c->q[0] = c->q[1];
    c->qn--;
    struct of_rec *r = &c->rec;
    int i = find_net(c, o.vni);
    if (i < 0) {
        r->counters[C_REFUSED]++;
        free(o.own);
        return -1;
    }
    r->net = i;
    r->sender = o.sender;
    if (o.len < OF_VNET_LEN + 14) {
        free(o.own);
        return r->kind = OF_RUNT;
    }
    const uint8_t *d = o.ptr;
    /* `data[33:34] == b"\x06"`: a frame that ends before octet 33 is not TCP. */
    int tcp = o.len > 33 && d[33] == 6 && d[22] == 0x08 && d[23] == 0x00;
    r->kind = OF_FRAME;
    r->bytes = (int64_t)o.len - OF_VNET_LEN;
    r->woke = !tcp && c->nets[i].latency_fd != c->nets[i].tap_fd;
    memcpy(r->mac, d + 16, 6);
    c->w_pending = 1;
    c->w_fd = tcp ? c->nets[i].tap_fd : c->nets[i].latency_fd;
    c->w_net = i;
    c->w_ptr = o.ptr;
    c->w_len = o.len;
    c->w_own = o.own;
    /* A source MAC with a slot that needs no learning is counted here, and written at once. */
    int s = accel_slot_find(&c->slots, i, r->mac);
    if (s >= 0) {
        const struct accel_slot *slot = &c->slots.slots[s];
        if (!slot->learned || slot->sender == r->sender) {
            accel_slot_count(&c->slots, s, 1, r->bytes, 1);
            c->drain_woke |= r->woke;
            return -1;
        }
    }
    return OF_FRAME;
}

int of_step(struct of_ctx *c)
{
    struct of_rec *r = &c->rec;
    for (;;) {
        if (c->w_pending) {
            ssize_t wrote;
            do
                wrote = write(c->w_fd, c->w_ptr, c->w_len);
            while (wrote < 0 && errno == EINTR);
            c->w_pending = 0;
            free(c->w_own);
            c->w_own = NULL;
            if (wrote < 0) {
                r->kind = OF_TAPERR;
                r->net = c->w_net;
                return OF_TAPERR;
            }
        }
        if (c->qn) {
            int kind = deliver(c);
            if (kind >= 0)
                return kind;
            continue;
        }
        if (c->pos < c->size) {
            size_t n = c->size - c->pos < c->seg ? c->size - c->pos : c->seg;
            feed(c, c->cur_sender, c->cur_addr, c->buf + c->pos, n);
            c->pos += n;
            continue;
        }
        if (c->finished) {
            r->counted = 0;
            for (int i = 0; i < C_COUNT; i++)
                r->counted |= r->counters[i] != 0;
            r->woke = c->drain_woke;
            r->slots = c->slots.ndirty;
            return r->kind = OF_DONE;
        }
        if (c->budget > 0 && receive(c))
            continue;
        c->finished = 1;
        c->size = c->pos = 0;
        run_flush(c);
    }
}

/* -- egress: `HotLoop._send_whole`'s sends (chunks.split without the copies) --------------- */

/* Send chunks [first, first + n) of `data` (a virtio-net header and frame of `len` octets cut
 * into `chunk`-octet pieces, `count` in all) as frame `frame_id` of VNI `vni` to `addr`:`port`
 * (network order): one sendmsg, with UDP_SEGMENT when n > 1 (what `_send_whole` gives one
 * `sendmsg`). Returns 0, or the errno of the failed send. */
int of_send(int fd, const uint8_t *data, size_t len, uint32_t vni, uint32_t frame_id, int chunk,
            int count, int first, int n, uint32_t addr, int port)
{
    uint8_t heads[OF_MAX_CHUNKS][OF_HEADER_LEN];
    struct iovec iov[2 * OF_MAX_CHUNKS];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control;
    if (n < 1 || first < 0 || first + n > count || count > OF_MAX_CHUNKS || chunk <= 0)
        return EINVAL;
    for (int j = 0; j < n; j++) {
        int i = first + j;
        uint8_t *h = heads[j];
        size_t at = (size_t)i * (size_t)chunk;
        size_t piece = at >= len ? 0 : (len - at < (size_t)chunk ? len - at : (size_t)chunk);
        h[0] = 0, h[1] = 'O', h[2] = 'N', h[3] = 1;
        h[4] = (uint8_t)(vni >> 16), h[5] = (uint8_t)(vni >> 8), h[6] = (uint8_t)vni;
        h[7] = (uint8_t)count;
        h[8] = (uint8_t)(frame_id >> 24), h[9] = (uint8_t)(frame_id >> 16);
        h[10] = (uint8_t)(frame_id >> 8), h[11] = (uint8_t)frame_id;
        h[12] = (uint8_t)i, h[13] = h[14] = h[15] = 0;
        iov[2 * j].iov_base = h;
        iov[2 * j].iov_len = OF_HEADER_LEN;
        iov[2 * j + 1].iov_base = (void *)(data + (at < len ? at : len));
        iov[2 * j + 1].iov_len = piece;
    }
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = addr;
    to.sin_port = htons((uint16_t)port);
    struct msghdr msg = {0};
    msg.msg_name = &to;
    msg.msg_namelen = sizeof to;
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)(2 * n);
    if (n > 1) {
        uint16_t size = (uint16_t)(chunk + OF_HEADER_LEN);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
        h->cmsg_level = SOL_UDP;
        h->cmsg_type = 103; /* UDP_SEGMENT */
        h->cmsg_len = CMSG_LEN(sizeof size);
        memcpy(CMSG_DATA(h), &size, sizeof size);
    }
    ssize_t sent;
    do
        sent = sendmsg(fd, &msg, 0);
    while (sent < 0 && errno == EINTR);
    return sent < 0 ? errno : 0;
}

/* of_begin and the first of_step in one call (one ctypes call fewer per drain: a paced stream
 * has one datagram per drain). */
int of_drain(struct of_ctx *c, int fd, int budget, int merge)
{
    of_begin(c, fd, budget, merge);
    return of_step(c);
}

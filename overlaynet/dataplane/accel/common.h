/* What the ingress drains in C (ingress.c, offload.c) share: octet access, the IPv4 and
 * pseudo-header checksums of a rebuilt super-frame, the table of networks and member addresses
 * each context looks up, the receive of one UDP_GRO buffer, and the table of source MACs a
 * context counts itself. Only `static inline` functions and macros: each helper stays one
 * shared library of its own (the loader hashes this header with each source, so an edit here
 * rebuilds both).
 */
#ifndef OVERLAYNET_ACCEL_COMMON_H
#define OVERLAYNET_ACCEL_COMMON_H

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/* One receive: larger than any GRO buffer (hotpath.READ_SIZE). */
#define ACCEL_READ_SIZE (65536 + 64)

static inline uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline uint32_t fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return sum;
}

/* Set the IPv4 header at `ip` (20 octets, no options) to total length `total` and its header
 * checksum to match. */
static inline void ipv4_rebuild(uint8_t *ip, uint32_t total)
{
    uint32_t sum = 0;
    put16(ip + 2, total);
    put16(ip + 10, 0);
    for (int i = 0; i < 20; i += 2)
        sum += be16(ip + i);
    put16(ip + 10, ~fold(sum) & 0xFFFF);
}

/* The folded pseudo-header sum of the IPv4 header at `ip` for protocol `proto` and `len` octets
 * of transport header and payload: what a CHECKSUM_PARTIAL frame carries in its checksum field
 * (the device adds the rest). */
static inline uint32_t pseudo_sum(const uint8_t *ip, uint32_t proto, uint32_t len)
{
    return fold(be16(ip + 12) + be16(ip + 14) + be16(ip + 16) + be16(ip + 18) + proto + len);
}

/* Replace the tables of context `c` (its fields nets, nnets, last_net, members, nmembers,
 * last_member) with copies of `nets_` (`nnets_` of them) and `members_` (`nmembers_` addresses,
 * network order). Only between drains. Evaluates to 0, or -1 without memory (the old tables
 * stay). */
#define ACCEL_SET_TABLES(c, nets_, nnets_, members_, nmembers_)                                 \
    __extension__({                                                                             \
        int n_nets_ = (nnets_), n_members_ = (nmembers_);                                       \
        __typeof__((c)->nets) n_ = malloc(sizeof *n_ * (size_t)(n_nets_ > 0 ? n_nets_ : 1));    \
        uint32_t *m_ = malloc(sizeof *m_ * (size_t)(n_members_ > 0 ? n_members_ : 1));          \
        int ok_ = n_ != NULL && m_ != NULL;                                                     \
        if (!ok_) {                                                                             \
            free(n_);                                                                           \
            free(m_);                                                                           \
        } else {                                                                                \
            if (n_nets_ > 0)                                                                    \
                memcpy(n_, (nets_), sizeof *n_ * (size_t)n_nets_);                              \
            if (n_members_ > 0)                                                                 \
                memcpy(m_, (members_), sizeof *m_ * (size_t)n_members_);                        \
            free((c)->nets);                                                                    \
            free((c)->members);                                                                 \
            (c)->nets = n_;                                                                     \
            (c)->nnets = n_nets_;                                                               \
            (c)->members = m_;                                                                  \
            (c)->nmembers = n_members_;                                                         \
            (c)->last_net = (c)->last_member = 0;                                               \
        }                                                                                       \
        ok_ ? 0 : -1;                                                                           \
    })

/* The index of the first of the `n` items at `items` for which `match` (an expression of
 * `item_`, a pointer to the item) holds, trying item `last` first (a drain sees long runs of
 * one network and sender) and remembering the one found there; -1 if none. */
#define ACCEL_LOOKUP(items, n, last, match)                                                     \
    __extension__({                                                                             \
        int at_ = -1;                                                                           \
        if ((last) < (n)) {                                                                     \
            const __typeof__(*(items)) *item_ = &(items)[(last)];                               \
            if (match)                                                                          \
                at_ = (last);                                                                   \
        }                                                                                       \
        for (int i_ = 0; at_ < 0 && i_ < (n); i_++) {                                           \
            const __typeof__(*(items)) *item_ = &(items)[i_];                                   \
            if (match)                                                                          \
                at_ = (last) = i_;                                                              \
        }                                                                                       \
        at_;                                                                                    \
    })

/* One receive of socket `fd` into `buf` (ACCEL_READ_SIZE octets) without waiting, again after
 * EINTR: the octets received, with the sender in `from` and the UDP_GRO segment size in `seg`
 * (the whole size without one), or -1 with errno (EAGAIN: nothing left). */
static inline ssize_t accel_receive(int fd, uint8_t *buf, struct sockaddr_in *from, size_t *seg)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec v = {buf, ACCEL_READ_SIZE};
    ssize_t got;
    struct msghdr m;
    do {
        memset(&m, 0, sizeof m);
        m.msg_name = from;
        m.msg_namelen = sizeof *from;
        m.msg_iov = &v;
        m.msg_iovlen = 1;
        m.msg_control = control.buf;
        m.msg_controllen = sizeof control.buf;
        got = recvmsg(fd, &m, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got < 0)
        return -1;
    *seg = (size_t)got;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL; h = CMSG_NXTHDR(&m, h))
        if (h->cmsg_level == SOL_UDP && h->cmsg_type == UDP_GRO) {
            int value;
            memcpy(&value, CMSG_DATA(h), sizeof value);
            if (value > 0)
                *seg = (size_t)value;
        }
    return got;
}

/* Whether the errno of a failed accel_receive is an error to count (not just "nothing left"). */
static inline int accel_receive_failed(void) { return errno != EAGAIN && errno != EWOULDBLOCK; }

/* The datagrams in a receive of `size` octets cut in `seg`-octet segments (an empty datagram
 * is one). */
static inline int accel_datagrams(size_t size, size_t seg)
{
    return size ? (int)((size + seg - 1) / seg) : 1;
}

/* -- source MACs a context counts itself (ingress.c, offload.c) ------------------------------ */

/* Slots of a table (fastingress.SLOTS): more than one host's containers send from; when full,
 * Python empties the table and fills it again with the MACs it sees. */
#define ACCEL_SLOTS 1024
/* Hash buckets of the slot table: a power of two, twice the slots (short probe runs). */
#define ACCEL_BUCKETS 2048

/* A source MAC of one network the context counts itself (accel_slot_learn): its FDB entry's
 * remote (a member's index, -1 for none) and whether it is learned; the frames, octets and the
 * helper's third count (ingress: merged writes; offload: delivered frames) since the last
 * fold. */
struct accel_slot {
    uint8_t mac[6];
    uint8_t used, dirty;
    int32_t net, sender, learned;
    int64_t frames, bytes, merged;
};

struct accel_slots {
    struct accel_slot *slots;
    int32_t *buckets; /* ACCEL_BUCKETS slot indexes, -1 empty, linear probing */
    int32_t *dirty;   /* the slots counted since the last fold, in order */
    int nused, ndirty, next_free;
};

static inline void accel_slots_free(struct accel_slots *t)
{
    free(t->slots);
    free(t->buckets);
    free(t->dirty);
    t->slots = NULL;
    t->buckets = t->dirty = NULL;
}

/* An empty table in `t`: 0, or -1 without memory (then accel_slots_free it). */
static inline int accel_slots_init(struct accel_slots *t)
{
    memset(t, 0, sizeof *t);
    t->slots = calloc(ACCEL_SLOTS, sizeof *t->slots);
    t->buckets = malloc(ACCEL_BUCKETS * sizeof *t->buckets);
    t->dirty = malloc(ACCEL_SLOTS * sizeof *t->dirty);
    if (t->slots == NULL || t->buckets == NULL || t->dirty == NULL)
        return -1;
    memset(t->buckets, 0xFF, ACCEL_BUCKETS * sizeof *t->buckets);
    return 0;
}

static inline uint32_t accel_slot_hash(int net, const uint8_t *mac)
{
    uint32_t h = 2166136261u ^ (uint32_t)net; /* FNV-1a over the network and the MAC */
    for (int i = 0; i < 6; i++)
        h = (h ^ mac[i]) * 16777619u;
    return h & (ACCEL_BUCKETS - 1);
}

/* The slot of network `net`'s source `mac`, or -1. */
static inline int accel_slot_find(const struct accel_slots *t, int net, const uint8_t *mac)
{
    for (uint32_t b = accel_slot_hash(net, mac);; b = (b + 1) & (ACCEL_BUCKETS - 1)) {
        int s = t->buckets[b];
        if (s < 0)
            return -1;
        const struct accel_slot *slot = &t->slots[s];
        if (slot->net == net && memcmp(slot->mac, mac, 6) == 0)
            return s;
    }
}

static inline void accel_slot_place(struct accel_slots *t, int s)
{
    uint32_t b = accel_slot_hash(t->slots[s].net, t->slots[s].mac);
    while (t->buckets[b] >= 0)
        b = (b + 1) & (ACCEL_BUCKETS - 1);
    t->buckets[b] = s;
}

/* Count network `net`'s source `mac` from now on: its FDB entry's remote is member `sender`
 * (-1: none), `learned` whether the entry is learned (frames from another member then go to
 * Python, which learns). Returns the slot (the same one again for a MAC already held, with the
 * new facts), or -1 when the table is full. */
static inline int accel_slot_learn(struct accel_slots *t, int net, const uint8_t *mac,
                                   int sender, int learned)
{
    int s = accel_slot_find(t, net, mac);
    if (s < 0) {
        if (t->nused >= ACCEL_SLOTS)
            return -1;
        while (t->slots[t->next_free].used)
            t->next_free = (t->next_free + 1) % ACCEL_SLOTS;
        s = t->next_free;
        struct accel_slot *slot = &t->slots[s];
        memset(slot, 0, sizeof *slot);
        memcpy(slot->mac, mac, 6);
        slot->used = 1;
        slot->net = net;
        t->nused++;
        accel_slot_place(t, s);
    }
    t->slots[s].sender = sender;
    t->slots[s].learned = learned;
    return s;
}

/* Stop counting the MACs of network `net` (-1: of every network); what they counted and was
 * not folded is lost (Python folds first). */
static inline void accel_slot_forget(struct accel_slots *t, int net)
{
    int ndirty = 0;
    memset(t->buckets, 0xFF, ACCEL_BUCKETS * sizeof *t->buckets);
    t->nused = 0;
    for (int s = 0; s < ACCEL_SLOTS; s++) {
        struct accel_slot *slot = &t->slots[s];
        if (slot->used && (net < 0 || slot->net == net))
            slot->used = slot->dirty = 0;
        if (!slot->used)
            continue;
        t->nused++;
        accel_slot_place(t, s);
    }
    for (int k = 0; k < t->ndirty; k++)
        if (t->slots[t->dirty[k]].dirty)
            t->dirty[ndirty++] = t->dirty[k];
    t->ndirty = ndirty;
}

/* Hand over what the slots counted since the last fold (up to `max` slots: their indexes,
 * frames, octets, third counts) and start again from zero. Returns how many slots. */
static inline int accel_slot_fold(struct accel_slots *t, int32_t *slots, int64_t *frames,
                                  int64_t *bytes, int64_t *merged, int max)
{
    int n = t->ndirty < max ? t->ndirty : max;
    for (int k = 0; k < n; k++) {
        struct accel_slot *slot = &t->slots[t->dirty[k]];
        slots[k] = t->dirty[k];
        frames[k] = slot->frames;
        bytes[k] = slot->bytes;
        merged[k] = slot->merged;
        slot->frames = slot->bytes = slot->merged = 0;
        slot->dirty = 0;
    }
    memmove(t->dirty, t->dirty + n, (size_t)(t->ndirty - n) * sizeof *t->dirty);
    t->ndirty -= n;
    return n;
}

/* Slot `s` of `t` counted `frames` frames of `bytes` octets and `merged` of the third count. */
static inline void accel_slot_count(struct accel_slots *t, int s, int64_t frames, int64_t bytes,
                                    int64_t merged)
{
    struct accel_slot *slot = &t->slots[s];
    if (!slot->dirty) {
        slot->dirty = 1;
        t->dirty[t->ndirty++] = s;
    }
    slot->frames += frames;
    slot->bytes += bytes;
    slot->merged += merged;
}

#endif

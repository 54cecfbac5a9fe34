/* What the ingress drains in C (ingress.c, offload.c) share: octet access, the IPv4 and
 * pseudo-header checksums of a rebuilt super-frame, the table of networks and member addresses
 * each context looks up, and the receive of one UDP_GRO buffer. Only `static inline` functions
 * and macros: each helper stays one shared library of its own (the loader hashes this header
 * with each source, so an edit here rebuilds both).
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

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Shared definitions of the snowgate redirect programs: the records kept per
 * socket and per client tuple, the refusal events, the counter reasons and the
 * load-time constants. The Go side reads the same layouts through the bpf2go
 * bindings in internal/redirect.
 *
 * Byte order: addresses and ports inside these records are in network byte
 * order, exactly as the kernel hands them to sock_addr programs. Addresses are
 * always 16 bytes; IPv4 is stored as ::ffff:a.b.c.d so one key shape serves
 * AF_INET and AF_INET6 sockets alike.
 */
#ifndef SNOWGATE_H
#define SNOWGATE_H

#include <linux/types.h>

/* Why a program acted: the index into the counters array and the reason of a
 * refusal event. Append only: the Go side names them by value. */
enum sg_reason {
	SG_REDIRECTED4 = 0,       /* TCP (v4 or v4-mapped) sent to the gateway */
	SG_REDIRECTED6,           /* native IPv6 TCP sent to the v6 gateway address */
	SG_REFUSED_V6,            /* native IPv6 to an intercepted port, no v6 gateway */
	SG_REFUSED_QUIC,          /* UDP to 443 (QUIC, HTTP/3) */
	SG_REFUSED_DOT,           /* TCP or UDP to 853 (DNS over TLS / QUIC) */
	SG_REFUSED_PROTO,         /* an IP protocol other than TCP and UDP */
	SG_REFUSED_RAW,           /* SOCK_RAW refused at socket creation */
	SG_DNS_REDIRECTED,        /* port 53 sent to the gateway's DNS listener */
	SG_EGRESS_DROPPED,        /* backstop dropped a packet that escaped redirection */
	SG_TUPLE_UPDATE_FAILED,   /* sockops could not record the tuple: the socket is cut off */
	SG_REFUSED_NO_TARGET,     /* no gateway address for the client's network namespace */
	SG_REFUSED_NO_STORAGE,    /* socket storage for the original destination unavailable */
	SG_TUPLE_RECORDED,        /* sockops recorded a client tuple */
	SG_TUPLE_DELETED,         /* sockops removed a tuple when the socket closed */
	SG_DNS_REPLY_RESTORED,    /* recvmsg restored the resolver as the reply source */
	SG_REASON_MAX,
};

/* Which program produced an event. */
enum sg_hook {
	SG_HOOK_CONNECT4 = 1,
	SG_HOOK_CONNECT6,
	SG_HOOK_SENDMSG4,
	SG_HOOK_SENDMSG6,
	SG_HOOK_SOCK_CREATE,
	SG_HOOK_EGRESS,
	SG_HOOK_SOCKOPS,
};

/* Bits of sg_origin.flags. */
#define SG_F_REDIRECTED  (1 << 0) /* the socket's destination was rewritten */
#define SG_F_V4          (1 << 1) /* the original destination is IPv4 (or v4-mapped) */
#define SG_F_DNS         (1 << 2) /* the socket talks to the DNS listener */
#define SG_F_UNRECORDED  (1 << 3) /* the tuple could not be recorded: egress drops it */
#define SG_F_NOSOCK      (1 << 4) /* tuple record: sg_socks holds nothing for the socket */

/* The original destination of a redirected socket and who opened it. For TCP
 * connect4/6 hand it to sockops through a per-CPU slot of sg_handoff (or, when
 * the slot is taken, sg_socks), and sockops moves it into the tuple map under
 * the client's (address, port); for UDP (DNS) it lives in socket storage. */
struct sg_origin {
	__u32 addr[4];      /* original destination, network order, v4 as ::ffff:x */
	__u32 target[4];    /* where it was sent instead, same encoding */
	__u64 cgroup_id;    /* cgroup v2 id of the connecting task */
	__u64 cookie;       /* socket cookie, so a close deletes only its own tuple */
	__u32 pid;          /* thread-group id of the connecting task */
	__u32 uid;          /* uid of the connecting task */
	__u16 port;         /* original destination port, network order */
	__u16 target_port;  /* gateway port, network order */
	__u8 flags;         /* SG_F_* */
	__u8 proto;         /* IPPROTO_TCP or IPPROTO_UDP */
	__u16 _pad;
};

/* The key of the tuple map: the client's local address and port as the
 * gateway sees them in accept(). */
struct sg_tuple_key {
	__u32 addr[4]; /* network order, v4 as ::ffff:x */
	__u16 port;    /* network order */
	__u16 _pad;
};

/* A slot of sg_conns: the tuple record of one redirected TCP connection,
 * written in place. o.cookie says whose it is: 0 free, SG_SLOT_BUSY being
 * written or wiped, else the socket cookie (the slot is complete). */
struct sg_conn {
	struct sg_tuple_key key; /* the client's address and port */
	__u32 _pad;
	struct sg_origin o;
};

/* Slots of sg_conns: one per (client address, port) hash, a power of two. */
#define SG_CONN_SLOTS 65536

/* A refusal, sent through the ring buffer. Routine redirects never produce
 * events (a wakeup per connect costs more than the redirect itself). */
struct sg_event {
	__u64 cgroup_id;
	__u32 pid;
	__u32 uid;
	__u32 addr[4];  /* destination, network order, v4 as ::ffff:x */
	__u16 port;     /* destination port, network order */
	__u8 reason;    /* enum sg_reason */
	__u8 hook;      /* enum sg_hook */
	__u8 proto;     /* IP protocol number */
	__u8 _pad[3];
};

/* Per-network-namespace gateway address, keyed by netns cookie. Entries
 * override the host gateway address for clients in that namespace. */
struct sg_netns_target {
	__u32 proxy_ip4; /* network order */
	__u32 dns_ip4;   /* network order; 0 = use proxy_ip4 */
	__u16 proxy_port; /* network order */
	__u16 dns_port;   /* network order; 0 = DNS refused in this namespace */
};

/* An address of a Snowflake name, as the DNS listener saw it in an answer:
 * the key of sg_snowflake_addrs. Network order, v4 as ::ffff:x. */
struct sg_addr {
	__u32 addr[4];
};

/* Until when an address counts as a Snowflake address: the answer's TTL plus
 * a grace period, on CLOCK_BOOTTIME (what bpf_ktime_get_boot_ns reads), which
 * keeps counting across a daemon restart, so the pinned entries stay valid. */
struct sg_learned {
	__u64 expires_ns; /* CLOCK_BOOTTIME */
	__u32 ttl;        /* the answer's TTL, seconds */
	__u32 _pad;
};

#define SG_MAX_PORTS 8

#endif /* SNOWGATE_H */

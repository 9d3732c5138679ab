// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * snowgate redirect programs, attached to the cgroup that holds the agents.
 *
 *   connect4/6     TCP to the intercepted ports goes to the gateway, the original
 *                  destination is handed to sockops through a per-CPU slot of
 *                  sg_handoff tagged with the socket cookie (UDP DNS in socket
 *                  storage); QUIC, DoT/DoQ and every IP protocol other than
 *                  TCP and UDP are refused; port 53 goes to the gateway's DNS
 *                  listener.
 *   sendmsg4/6     unconnected UDP: 443/853 refused, 53 sent to the DNS listener.
 *   recvmsg4/6     DNS replies appear to come from the resolver that was asked.
 *   getpeername4/6 the agent sees the original peer.
 *   sockops        client (address, port) -> origin, for the gateway's look-up
 *                  and getpeername, in a slot of sg_conns (sg_tuples when the
 *                  slot is taken); removed when the socket reaches TCP_CLOSE.
 *   sock_create    raw sockets and IP protocols other than TCP, UDP and ICMP
 *                  (ping sockets) refused.
 *   egress         backstop: drops what escaped the above.
 *
 * Only the stable UAPI contexts are used, so no vmlinux.h and no CO-RE. The
 * gateway is excluded by cgroup id, never by mark, uid or pid.
 *
 * Tuple-record failure (documented choice): sockops cannot refuse a connect.
 * When the tuple cannot be recorded (its sg_conns slot taken and the
 * sg_tuples update failing), sockops gives the socket storage marked
 * SG_F_UNRECORDED and the egress backstop drops every packet of that socket, so
 * the SYN never leaves and the connect fails closed. The gateway independently
 * refuses any peer it finds no tuple for.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "snowgate.h"

char _license[] SEC("license") = "Dual MIT/GPL";

#define SG_SOCK_RAW 3        /* include/linux/net.h enum sock_type */
#define SG_AF_INET 2
#define SG_IPPROTO_MPTCP 262 /* MPTCP sockets report this protocol */
#define SG_IPPROTO_ICMPV6 58
#define SG_TCP_CLOSE 7       /* BPF_TCP_CLOSE */
#define SG_PORT_DNS 53
#define SG_PORT_HTTPS 443
#define SG_PORT_DOT 853

/* Prevent clang from merging adjacent context stores into one wide store,
 * which the verifier rejects for sock_addr contexts. */
#define barrier() asm volatile("" ::: "memory")

/* Load a u32 field of struct bpf_sock straight off the socket pointer. The
 * verifier refuses any arithmetic on a socket pointer, which clang emits when
 * it selects between fields or shares a base address. */
#define sock_read(dst, sk, field)                                                  \
	asm volatile("%0 = *(u32 *)(%1 + %2)"                                      \
		     : "=r"(dst)                                                   \
		     : "r"(sk), "i"(__builtin_offsetof(struct bpf_sock, field)))

/* Load-time constants, set from Go (internal/redirect) before loading.
 * Addresses and ports in network byte order unless noted. */
volatile const __u64 gateway_cgroup_id = 0;
volatile const __u64 host_netns_cookie = 0;
volatile const __u32 proxy4_ip = 0;      /* host netns TCP gateway */
volatile const __u16 proxy4_port = 0;
volatile const __u32 host_proxy4_ip = 0; /* gateway as seen from other netns */
volatile const __u16 host_proxy4_port = 0;
volatile const __u32 proxy6_ip[4] = {};  /* optional native v6 gateway */
volatile const __u16 proxy6_port = 0;
volatile const __u32 dns4_ip = 0;        /* host netns DNS listener; port 0 = off */
volatile const __u16 dns4_port = 0;
volatile const __u32 host_dns4_ip = 0;   /* DNS listener as seen from other netns */
volatile const __u16 host_dns4_port = 0;
volatile const __u32 dns6_ip[4] = {};    /* optional native v6 DNS listener */
volatile const __u16 dns6_port = 0;
volatile const __u16 intercept_ports[SG_MAX_PORTS] = {443, 80}; /* host order, 0 = unused */

/* Socket storage: the original destination of each redirected UDP (DNS)
 * socket; for TCP only the marker of a socket whose tuple could not be
 * recorded (SG_F_UNRECORDED, read by egress), and the records of sockets the
 * socket-storage program generation redirected. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sg_origin);
} sg_origins SEC(".maps");

/* Socket cookie -> original destination of a redirected TCP socket whose
 * handoff slot (sg_handoff) was taken: connect4/6 write it here instead (or
 * move the slot's unclaimed record here), sockops moves it into the tuple map
 * at TCP_CONNECT_CB. The previous program generation kept every TCP record
 * here until the socket closed; sockops and getpeername still read it, and
 * the close removes what a tuple record does not say is gone (SG_F_NOSOCK).
 * A preallocated LRU map: a record of a connect that failed before
 * TCP_CONNECT_CB is evicted in time. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sg_origin);
} sg_socks SEC(".maps");

/* The handoff from connect4/6 to sockops: connect() runs both in one system
 * call (TCP_CONNECT_CB before the SYN), so a redirected socket's record
 * waits in a slot of the connecting CPU, tagged with the socket cookie
 * (sg_origin.cookie: 0 free, SG_SLOT_BUSY being written), instead of being
 * inserted into and later deleted from a hash map. Slot = cookie modulo
 * SG_HANDOFF_SLOTS. A connect4 that finds its slot holding another socket's
 * unclaimed record (a connect that failed before TCP_CONNECT_CB, a deferred
 * TCP_FASTOPEN_CONNECT, a task preempted in between) moves that record to
 * sg_socks first, so no record is ever dropped. sockops claims its record
 * with a compare-and-swap of the cookie, on another CPU's slot too when the
 * task migrated. Pinned: every program generation that shares this layout
 * must hand off through the same slots. */
#define SG_HANDOFF_SLOTS 8
#define SG_SLOT_BUSY ((__u64)-1)
#define SG_MAX_CPUS 1024 /* bound of the cross-CPU search */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SG_HANDOFF_SLOTS);
	__type(key, __u32);
	__type(value, struct sg_origin);
} sg_handoff SEC(".maps");

/* Client (address, port) -> origin, read by the gateway on accept and by
 * getpeername (with the socket cookie checked), in two parts. sg_conns, an
 * array of slots indexed by a hash of the tuple (conn_slot), written in place
 * and claimed with a compare-and-swap of the cookie: recording and removing a
 * connection there takes no lock and allocates nothing (a hash-map insert and
 * delete cost ≈ 0.5 µs per connect here). A connection whose slot holds
 * another live connection (two client addresses whose tuples share a slot),
 * and every connection the previous program generations recorded, is in
 * sg_tuples, the LRU hash keyed by the tuple. Readers look at the slot first:
 * it is a tuple's record when its key is the tuple and its cookie is a
 * socket's; otherwise the tuple's record, if any, is in sg_tuples. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SG_CONN_SLOTS);
	__type(key, __u32);
	__type(value, struct sg_conn);
} sg_conns SEC(".maps");

/* Client (address, port) -> origin when its sg_conns slot was taken. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sg_tuple_key);
	__type(value, struct sg_origin);
} sg_tuples SEC(".maps");

/* Per-reason counters (enum sg_reason). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SG_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sg_counters SEC(".maps");

/* Refusal events. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} sg_events SEC(".maps");

/* Index 0: how many sockets sockops ever marked SG_F_UNRECORDED. While it is
 * zero, which is always unless the tuple map failed, the egress backstop skips
 * the socket-storage look-up of every TCP packet: an inlined array load
 * instead of two helper calls per packet. It never decreases. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sg_unrecorded SEC(".maps");

/* Network-namespace cookie -> gateway address for that namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct sg_netns_target);
} sg_netns SEC(".maps");

/* The addresses the gateway's DNS listener saw in answers for Snowflake
 * names, written by the listener before it releases the answer and read by
 * the gateway's domain-fronting check (a known Snowflake address with a
 * foreign server name is refused). Entries carry their expiry (the DNS TTL
 * plus grace); the LRU bound keeps a flood of answers from growing it. Pinned,
 * so what was learned survives a daemon restart. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sg_addr);
	__type(value, struct sg_learned);
} sg_snowflake_addrs SEC(".maps");

/* bpf2go -type needs the types referenced. */
const struct sg_event *unused_sg_event __attribute__((unused));
const enum sg_reason *unused_sg_reason __attribute__((unused));
const enum sg_hook *unused_sg_hook __attribute__((unused));

struct who {
	__u64 cgroup_id;
	__u32 pid;
	__u32 uid;
};

struct target {
	__u32 ip;
	__u16 port;
};

enum verdict { V_ALLOW, V_DENY, V_REDIRECT, V_DNS };

/* The caller's cgroup, for the gateway exclusion: fetched only once a call is
 * about to be refused or rewritten. */
static __always_inline void who_init(struct who *w)
{
	w->cgroup_id = bpf_get_current_cgroup_id();
	w->pid = 0;
	w->uid = 0;
}

/* The caller's pid and uid, only fetched when something is recorded or
 * refused: most connects need neither. */
static __always_inline void who_task(struct who *w)
{
	w->pid = bpf_get_current_pid_tgid() >> 32;
	w->uid = (__u32)bpf_get_current_uid_gid();
}

static __always_inline int excluded(__u64 cgroup_id)
{
	return gateway_cgroup_id != 0 && cgroup_id == gateway_cgroup_id;
}

static __always_inline void count(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&sg_counters, &reason);
	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline void v4mapped(__u32 out[4], __u32 ip)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0xffff);
	out[3] = ip;
}

static __always_inline int is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Count a refusal and report it through the ring buffer. */
static __always_inline void refuse(const struct who *w, __u8 reason, __u8 hook,
				   __u8 proto, const __u32 addr[4], __u16 port)
{
	count(reason);
	struct sg_event *e = bpf_ringbuf_reserve(&sg_events, sizeof(*e), 0);
	if (!e)
		return;
	e->cgroup_id = w->cgroup_id;
	e->pid = w->pid;
	e->uid = w->uid;
	e->addr[0] = addr[0];
	e->addr[1] = addr[1];
	e->addr[2] = addr[2];
	e->addr[3] = addr[3];
	e->port = port;
	e->reason = reason;
	e->hook = hook;
	e->proto = proto;
	e->_pad[0] = 0;
	e->_pad[1] = 0;
	e->_pad[2] = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int is_intercepted(__u16 port)
{
#pragma unroll
	for (int i = 0; i < SG_MAX_PORTS; i++) {
		__u16 p = intercept_ports[i];
		if (p != 0 && p == port)
			return 1;
	}
	return 0;
}

static __always_inline int dns_enabled(void)
{
	return dns4_port != 0 || host_dns4_port != 0 || dns6_port != 0;
}

/* The policy for one destination port (host order). */
static __always_inline int policy(__u32 proto, __u16 port, __u8 *reason)
{
	if (proto == SG_IPPROTO_MPTCP)
		proto = IPPROTO_TCP;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
		*reason = SG_REFUSED_PROTO;
		return V_DENY;
	}
	if (port == SG_PORT_DOT) {
		*reason = SG_REFUSED_DOT;
		return V_DENY;
	}
	if (port == SG_PORT_DNS && dns_enabled())
		return V_DNS;
	if (proto == IPPROTO_UDP) {
		if (port == SG_PORT_HTTPS) {
			*reason = SG_REFUSED_QUIC;
			return V_DENY;
		}
		return V_ALLOW;
	}
	if (is_intercepted(port))
		return V_REDIRECT;
	return V_ALLOW;
}

/* The IPv4 gateway address for the caller's network namespace. */
static __always_inline int pick_target4(void *ctx, int dns, struct target *t)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);

	if (cookie == host_netns_cookie) {
		t->ip = dns ? dns4_ip : proxy4_ip;
		t->port = dns ? dns4_port : proxy4_port;
	} else {
		struct sg_netns_target *nt = bpf_map_lookup_elem(&sg_netns, &cookie);
		if (nt) {
			t->ip = dns ? (nt->dns_ip4 ? nt->dns_ip4 : nt->proxy_ip4) : nt->proxy_ip4;
			t->port = dns ? nt->dns_port : nt->proxy_port;
		} else {
			t->ip = dns ? host_dns4_ip : host_proxy4_ip;
			t->port = dns ? host_dns4_port : host_proxy4_port;
		}
	}
	return t->ip != 0 && t->port != 0;
}

/* Forget an earlier DNS redirect when a UDP socket is connected again
 * elsewhere. TCP needs no forgetting: its records are handed to sockops, which
 * checks that a record still names the socket's peer before using it, so an
 * allowed TCP connect returns without a helper call. */
static __always_inline void forget(struct bpf_sock *sk)
{
	if (!sk)
		return;
	struct sg_origin *o = bpf_sk_storage_get(&sg_origins, sk, 0, 0);
	if (o)
		o->flags = 0;
}

static __always_inline int is_tcp(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == SG_IPPROTO_MPTCP;
}

static __always_inline int spill(const struct sg_origin *rec)
{
	return bpf_map_update_elem(&sg_socks, &rec->cookie, rec, BPF_ANY) == 0;
}

/* Hand a TCP record (rec->cookie set) to this connect's TCP_CONNECT_CB
 * through the CPU's slot (sg_handoff), or through sg_socks when the slot is
 * being written by a connect this one preempted. Returns 0 when it could not
 * be recorded. */
static __always_inline int handoff_put(const struct sg_origin *rec)
{
	__u32 i = (__u32)rec->cookie & (SG_HANDOFF_SLOTS - 1);
	struct sg_origin *s = bpf_map_lookup_elem(&sg_handoff, &i);
	if (!s)
		return spill(rec);
	__u64 old = __sync_lock_test_and_set(&s->cookie, SG_SLOT_BUSY);
	if (old == SG_SLOT_BUSY)
		return spill(rec);
	if (old != 0 && old != rec->cookie) {
		/* Another socket's unclaimed record: keep it in sg_socks, where
		 * its sockops looks when the claim fails. */
		struct sg_origin prev = *s;
		prev.cookie = old;
		if (bpf_map_update_elem(&sg_socks, &old, &prev, BPF_ANY) != 0) {
			__sync_lock_test_and_set(&s->cookie, old);
			return spill(rec);
		}
	}
	struct sg_origin tmp = *rec;
	tmp.cookie = SG_SLOT_BUSY;
	*s = tmp;
	/* Publish: the data is complete before the tag says whose it is. */
	__sync_lock_test_and_set(&s->cookie, rec->cookie);
	return 1;
}

/* Claim the record connect4/6 handed to this socket: 1 when found (copied to
 * out), 0 when no slot holds it, -1 when a connect on the slot's CPU moved it
 * to sg_socks while it was being claimed. */
static __always_inline int handoff_take(__u64 cookie, struct sg_origin *out)
{
	__u32 i = (__u32)cookie & (SG_HANDOFF_SLOTS - 1);
	struct sg_origin *s = bpf_map_lookup_elem(&sg_handoff, &i);

	if (!s || s->cookie != cookie) {
		/* The task moved to another CPU between connect4 and
		 * TCP_CONNECT_CB (or TCP_CONNECT_CB was deferred). */
		s = 0;
		for (__u32 cpu = 0; cpu < SG_MAX_CPUS; cpu++) {
			struct sg_origin *x = bpf_map_lookup_percpu_elem(&sg_handoff, &i, cpu);
			if (!x)
				break;
			if (x->cookie == cookie) {
				s = x;
				break;
			}
		}
		if (!s)
			return 0;
	}
	*out = *s;
	if (__sync_val_compare_and_swap(&s->cookie, cookie, 0) != cookie)
		return -1;
	out->cookie = cookie;
	return 1;
}

/* The sg_conns slot of a tuple (internal/redirect computes the same). The
 * port in host order keeps the consecutive ports of one client address in
 * neighbouring slots. */
static __always_inline __u32 conn_slot(const struct sg_tuple_key *k)
{
	__u32 f = k->addr[0] ^ k->addr[1] ^ k->addr[2] ^ k->addr[3];

	return (f ^ (f >> 16) ^ bpf_ntohs(k->port)) & (SG_CONN_SLOTS - 1);
}

static __always_inline int tuple_eq(const struct sg_tuple_key *a, const struct sg_tuple_key *b)
{
	return a->port == b->port && a->addr[0] == b->addr[0] && a->addr[1] == b->addr[1] &&
	       a->addr[2] == b->addr[2] && a->addr[3] == b->addr[3];
}

/* The slot of k when it holds a complete record of k. */
static __always_inline struct sg_conn *conn_of(const struct sg_tuple_key *k)
{
	__u32 i = conn_slot(k);
	struct sg_conn *c = bpf_map_lookup_elem(&sg_conns, &i);

	if (!c)
		return 0;
	__u64 owner = c->o.cookie;
	if (owner == 0 || owner == SG_SLOT_BUSY || !tuple_eq(&c->key, k))
		return 0;
	return c;
}

/* Record rec (rec->cookie set) under k in its sg_conns slot when the slot is
 * free: claim it (0 -> busy), write it, publish the cookie. Returns 0 when
 * the slot is taken, and the record belongs in sg_tuples. */
static __always_inline int conn_put(const struct sg_tuple_key *k, const struct sg_origin *rec)
{
	__u32 i = conn_slot(k);
	struct sg_conn *c = bpf_map_lookup_elem(&sg_conns, &i);

	if (!c)
		return 0;
	if (__sync_val_compare_and_swap(&c->o.cookie, 0, SG_SLOT_BUSY) != 0)
		return 0;
	struct sg_origin tmp = *rec;
	tmp.cookie = SG_SLOT_BUSY;
	c->key = *k;
	c->_pad = 0;
	c->o = tmp;
	/* Publish: the record is complete before the cookie says whose it is. */
	barrier();
	__sync_lock_test_and_set(&c->o.cookie, rec->cookie);
	return 1;
}

/* Wipe the slot c of the socket with this cookie and free it. The flags go
 * first, so a reader never takes a half-wiped slot for a record. */
static __always_inline void conn_wipe(struct sg_conn *c)
{
	struct sg_origin zero = {};

	c->o.flags = 0;
	barrier();
	zero.cookie = SG_SLOT_BUSY;
	c->o = zero;
	__builtin_memset(&c->key, 0, sizeof(c->key));
	barrier();
	__sync_lock_test_and_set(&c->o.cookie, 0);
}

/* Record the original destination: TCP handed to sockops through sg_handoff
 * (no hash insert on the connect path), UDP (DNS) in socket storage, which
 * recvmsg reads for every reply and which is freed with the socket. Returns 0
 * when it could not be recorded. */
static __always_inline int remember(struct bpf_sock_addr *ctx, const struct who *w,
				    const __u32 orig[4], __u16 orig_port,
				    const __u32 tgt[4], __u16 tgt_port,
				    __u8 flags, __u32 proto)
{
	struct sg_origin rec;

	rec.addr[0] = orig[0];
	rec.addr[1] = orig[1];
	rec.addr[2] = orig[2];
	rec.addr[3] = orig[3];
	rec.target[0] = tgt[0];
	rec.target[1] = tgt[1];
	rec.target[2] = tgt[2];
	rec.target[3] = tgt[3];
	rec.cgroup_id = w->cgroup_id;
	rec.cookie = 0;
	rec.pid = w->pid;
	rec.uid = w->uid;
	rec.port = orig_port;
	rec.target_port = tgt_port;
	rec.flags = flags;
	rec.proto = is_tcp(proto) ? IPPROTO_TCP : proto;
	rec._pad = 0;
	if (is_tcp(proto)) {
		rec.cookie = bpf_get_socket_cookie(ctx);
		return handoff_put(&rec);
	}
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	struct sg_origin *o = bpf_sk_storage_get(&sg_origins, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 0;
	*o = rec; /* storage may exist already: a resolver asked again */
	return 1;
}

/* Shared body of connect4, sendmsg4 and the v4-mapped half of connect6 and
 * sendmsg6. Returns 1 to let the call proceed (possibly rewritten), 0 to
 * refuse it with EPERM.
 *
 * The port policy comes first: it needs only context loads, and an allowed
 * call returns without asking for the caller's cgroup. The gateway's own
 * cgroup is excluded before anything is refused or rewritten, so the order
 * changes no verdict (an allowed call only clears a stale record, and the
 * gateway's sockets never have one). */
static __always_inline int handle4(struct bpf_sock_addr *ctx, struct who *w,
				   __u32 proto, __u32 ip, __u16 port, int mapped,
				   __u8 hook, int connect)
{
	__u32 orig[4], tgt[4];
	__u8 reason = 0;
	struct target t = {};

	int v = policy(proto, bpf_ntohs(port), &reason);
	if (v == V_ALLOW) {
		if (connect && proto == IPPROTO_UDP)
			forget(ctx->sk);
		return 1;
	}
	who_init(w);
	if (excluded(w->cgroup_id))
		return 1;
	v4mapped(orig, ip);
	who_task(w);
	if (v == V_DENY) {
		refuse(w, reason, hook, proto, orig, port);
		return 0;
	}
	if (!pick_target4(ctx, v == V_DNS, &t)) {
		refuse(w, SG_REFUSED_NO_TARGET, hook, proto, orig, port);
		return 0;
	}
	v4mapped(tgt, t.ip);
	__u8 flags = SG_F_REDIRECTED | SG_F_V4 | (v == V_DNS ? SG_F_DNS : 0);
	if (!remember(ctx, w, orig, port, tgt, t.port, flags, proto)) {
		refuse(w, SG_REFUSED_NO_STORAGE, hook, proto, orig, port);
		return 0;
	}
	if (mapped) {
		ctx->user_ip6[0] = tgt[0];
		barrier();
		ctx->user_ip6[1] = tgt[1];
		barrier();
		ctx->user_ip6[2] = tgt[2];
		barrier();
		ctx->user_ip6[3] = tgt[3];
	} else {
		ctx->user_ip4 = t.ip;
	}
	barrier();
	ctx->user_port = t.port;
	count(v == V_DNS ? SG_DNS_REDIRECTED : SG_REDIRECTED4);
	return 1;
}

/* Native IPv6 half of connect6 and sendmsg6. */
static __always_inline int handle6(struct bpf_sock_addr *ctx, struct who *w,
				   __u32 proto, const __u32 orig[4], __u16 port,
				   __u8 hook, int connect)
{
	__u32 tgt[4];
	__u16 tgt_port;
	__u8 reason = 0;

	int v = policy(proto, bpf_ntohs(port), &reason);
	if (v == V_ALLOW) {
		if (connect && proto == IPPROTO_UDP)
			forget(ctx->sk);
		return 1;
	}
	who_init(w);
	if (excluded(w->cgroup_id))
		return 1;
	who_task(w);
	if (v == V_DENY) {
		refuse(w, reason, hook, proto, orig, port);
		return 0;
	}
	/* A v6 gateway address only exists in the host network namespace. */
	int host = bpf_get_netns_cookie(ctx) == host_netns_cookie;
	if (v == V_DNS) {
		tgt[0] = dns6_ip[0];
		tgt[1] = dns6_ip[1];
		tgt[2] = dns6_ip[2];
		tgt[3] = dns6_ip[3];
		tgt_port = dns6_port;
	} else {
		tgt[0] = proxy6_ip[0];
		tgt[1] = proxy6_ip[1];
		tgt[2] = proxy6_ip[2];
		tgt[3] = proxy6_ip[3];
		tgt_port = proxy6_port;
	}
	if (!host || tgt_port == 0) {
		refuse(w, SG_REFUSED_V6, hook, proto, orig, port);
		return 0;
	}
	__u8 flags = SG_F_REDIRECTED | (v == V_DNS ? SG_F_DNS : 0);
	if (!remember(ctx, w, orig, port, tgt, tgt_port, flags, proto)) {
		refuse(w, SG_REFUSED_NO_STORAGE, hook, proto, orig, port);
		return 0;
	}
	ctx->user_ip6[0] = tgt[0];
	barrier();
	ctx->user_ip6[1] = tgt[1];
	barrier();
	ctx->user_ip6[2] = tgt[2];
	barrier();
	ctx->user_ip6[3] = tgt[3];
	barrier();
	ctx->user_port = tgt_port;
	count(v == V_DNS ? SG_DNS_REDIRECTED : SG_REDIRECTED6);
	return 1;
}

static __always_inline int handle_addr6(struct bpf_sock_addr *ctx, __u8 hook, int connect)
{
	struct who w;
	__u32 a[4];

	__u32 proto = ctx->protocol;
	__u16 port = (__u16)ctx->user_port;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	if (is_v4mapped(a))
		return handle4(ctx, &w, proto, a[3], port, 1, hook, connect);
	return handle6(ctx, &w, proto, a, port, hook, connect);
}

SEC("cgroup/connect4")
int sg_connect4(struct bpf_sock_addr *ctx)
{
	struct who w;

	return handle4(ctx, &w, ctx->protocol, ctx->user_ip4, (__u16)ctx->user_port, 0,
		       SG_HOOK_CONNECT4, 1);
}

SEC("cgroup/connect6")
int sg_connect6(struct bpf_sock_addr *ctx)
{
	return handle_addr6(ctx, SG_HOOK_CONNECT6, 1);
}

SEC("cgroup/sendmsg4")
int sg_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct who w;

	return handle4(ctx, &w, ctx->protocol, ctx->user_ip4, (__u16)ctx->user_port, 0,
		       SG_HOOK_SENDMSG4, 0);
}

SEC("cgroup/sendmsg6")
int sg_sendmsg6(struct bpf_sock_addr *ctx)
{
	return handle_addr6(ctx, SG_HOOK_SENDMSG6, 0);
}

/* Could a socket whose peer has this port (network order) have been sent to
 * the gateway? The ports of every gateway address: the load-time ones, and
 * the per-namespace target of a client in another network namespace. Lets
 * sockops and getpeername skip every look-up for the sockets they have
 * nothing to do with. */
static __always_inline int gateway_port(void *ctx, __u16 port)
{
	if (port == 0)
		return 0;
	if (port == proxy4_port || port == host_proxy4_port || port == proxy6_port ||
	    port == dns4_port || port == host_dns4_port || port == dns6_port)
		return 1;
	__u64 c = bpf_get_netns_cookie(ctx);
	if (c == host_netns_cookie)
		return 0;
	struct sg_netns_target *nt = bpf_map_lookup_elem(&sg_netns, &c);
	return nt && (port == nt->proxy_port || port == nt->dns_port);
}

/* The origin of a redirected socket. A TCP socket's is in the tuple map under
 * its local address and port, with its cookie (a record of an earlier socket
 * on that port is not its own): getpeername answers ENOTCONN before
 * TCP_CONNECT_CB has recorded it (a deferred TCP_FASTOPEN_CONNECT is in
 * SYN_SENT until its first write), and every program generation since the
 * tuple map records it there. A UDP (DNS) socket's is in socket storage,
 * where a TCP socket also keeps one when the socket-storage generation
 * redirected it or when sockops marked it unrecorded. An MPTCP socket's is
 * its first subflow's: connect4/6 and sockops ran on the subflow, whose local
 * address and port the MPTCP socket shares, so its tuple record carries the
 * subflow's cookie. */
static __always_inline struct sg_origin *origin_of(struct bpf_sock_addr *ctx, struct bpf_sock *sk,
						   int v4)
{
	__u32 proto = ctx->protocol;
	struct sg_origin *o;

	if (proto != IPPROTO_UDP) {
		struct sg_tuple_key k = {};
		__u32 ip4, a0, a1, a2, a3, lport;

		sock_read(ip4, sk, src_ip4);
		sock_read(a0, sk, src_ip6[0]);
		sock_read(a1, sk, src_ip6[1]);
		sock_read(a2, sk, src_ip6[2]);
		sock_read(a3, sk, src_ip6[3]);
		sock_read(lport, sk, src_port);
		if (v4) {
			v4mapped(k.addr, ip4);
		} else {
			k.addr[0] = a0;
			k.addr[1] = a1;
			k.addr[2] = a2;
			k.addr[3] = a3;
		}
		k.port = bpf_htons((__u16)lport);
		__u64 cookie = bpf_get_socket_cookie(ctx);
		struct sg_conn *c = conn_of(&k);
		if (c && (proto == SG_IPPROTO_MPTCP || c->o.cookie == cookie))
			return &c->o;
		o = bpf_map_lookup_elem(&sg_tuples, &k);
		if (o && proto == SG_IPPROTO_MPTCP)
			return o;
		if (o && o->cookie == cookie)
			return o;
	}
	return bpf_sk_storage_get(&sg_origins, sk, 0, 0);
}

/* The origin when the address the kernel is about to report (peer or
 * datagram source) is the gateway the socket was sent to. */
static __always_inline struct sg_origin *origin_of4(struct bpf_sock_addr *ctx, __u8 need)
{
	__u32 ip = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || !gateway_port(ctx, port))
		return 0;
	struct sg_origin *o = origin_of(ctx, sk, 1);
	if (!o || (o->flags & need) != need || !(o->flags & SG_F_V4))
		return 0;
	if (ip != o->target[3] || port != o->target_port)
		return 0;
	return o;
}

static __always_inline struct sg_origin *origin_of6(struct bpf_sock_addr *ctx, __u8 need)
{
	__u32 a[4];
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	__u16 port = (__u16)ctx->user_port;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || !gateway_port(ctx, port))
		return 0;
	struct sg_origin *o = origin_of(ctx, sk, is_v4mapped(a));
	if (!o || (o->flags & need) != need)
		return 0;
	if (a[0] != o->target[0] || a[1] != o->target[1] || a[2] != o->target[2] ||
	    a[3] != o->target[3] || port != o->target_port)
		return 0;
	return o;
}

static __always_inline void restore4(struct bpf_sock_addr *ctx, const struct sg_origin *o)
{
	ctx->user_ip4 = o->addr[3];
	barrier();
	ctx->user_port = o->port;
}

static __always_inline void restore6(struct bpf_sock_addr *ctx, const struct sg_origin *o)
{
	ctx->user_ip6[0] = o->addr[0];
	barrier();
	ctx->user_ip6[1] = o->addr[1];
	barrier();
	ctx->user_ip6[2] = o->addr[2];
	barrier();
	ctx->user_ip6[3] = o->addr[3];
	barrier();
	ctx->user_port = o->port;
}

SEC("cgroup/getpeername4")
int sg_getpeername4(struct bpf_sock_addr *ctx)
{
	struct sg_origin *o = origin_of4(ctx, SG_F_REDIRECTED);
	if (o)
		restore4(ctx, o);
	return 1;
}

SEC("cgroup/getpeername6")
int sg_getpeername6(struct bpf_sock_addr *ctx)
{
	struct sg_origin *o = origin_of6(ctx, SG_F_REDIRECTED);
	if (o)
		restore6(ctx, o);
	return 1;
}

SEC("cgroup/recvmsg4")
int sg_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct sg_origin *o = origin_of4(ctx, SG_F_REDIRECTED | SG_F_DNS);
	if (o) {
		restore4(ctx, o);
		count(SG_DNS_REPLY_RESTORED);
	}
	return 1;
}

SEC("cgroup/recvmsg6")
int sg_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct sg_origin *o = origin_of6(ctx, SG_F_REDIRECTED | SG_F_DNS);
	if (o) {
		restore6(ctx, o);
		count(SG_DNS_REPLY_RESTORED);
	}
	return 1;
}

/* The addresses of a TCP socket as sockops sees them. Every field is read
 * unconditionally: a conditional read lets clang select between context
 * offsets, which the verifier refuses ("dereference of modified ctx ptr"). */
struct sops_view {
	__u32 family;
	__u32 lip4;
	__u32 lip6[4];
	__u32 rip4;
	__u32 rip6[4];
	__u32 lport; /* host order */
	__u32 rport; /* network order, as a u32 */
};

static __always_inline void sops_read(struct bpf_sock_ops *skops, struct sops_view *v)
{
	v->family = skops->family;
	v->lip4 = skops->local_ip4;
	v->lip6[0] = skops->local_ip6[0];
	v->lip6[1] = skops->local_ip6[1];
	v->lip6[2] = skops->local_ip6[2];
	v->lip6[3] = skops->local_ip6[3];
	v->rip4 = skops->remote_ip4;
	v->rip6[0] = skops->remote_ip6[0];
	v->rip6[1] = skops->remote_ip6[1];
	v->rip6[2] = skops->remote_ip6[2];
	v->rip6[3] = skops->remote_ip6[3];
	v->lport = skops->local_port;
	v->rport = skops->remote_port;
	barrier();
}

/* Is the socket's IPv4 view the one the tuple map uses? AF_INET, or AF_INET6
 * with a v4-mapped peer (the v6 peer address of a mapped socket is set before
 * TCP_CONNECT_CB; its v6 local address is not yet, hence local_ip4). It
 * matches SG_F_V4 of the record connect4/6 wrote. */
static __always_inline int sops_v4(const struct sops_view *v)
{
	return v->family == SG_AF_INET || is_v4mapped(v->rip6);
}

/* The tuple key of a TCP socket: its local address and port. */
static __always_inline void tuple_key(const struct sops_view *v, int v4, struct sg_tuple_key *k)
{
	if (v4) {
		v4mapped(k->addr, v->lip4);
	} else {
		k->addr[0] = v->lip6[0];
		k->addr[1] = v->lip6[1];
		k->addr[2] = v->lip6[2];
		k->addr[3] = v->lip6[3];
	}
	k->port = bpf_htons((__u16)v->lport);
	k->_pad = 0;
}

/* Does the record still describe this socket's connect, i.e. is the socket
 * connecting to the gateway address the record sent it to? A record left by
 * an earlier connect of the same socket that failed before TCP_CONNECT_CB
 * (unreachable network) is not, once the socket connects elsewhere. */
static __always_inline int sops_is_target(const struct sops_view *v, const struct sg_origin *o)
{
	/* remote_port is the port in network order as a u32. */
	if ((__u16)bpf_ntohl(v->rport) != bpf_ntohs(o->target_port))
		return 0;
	if (o->flags & SG_F_V4)
		return v->rip4 == o->target[3];
	return v->rip6[0] == o->target[0] && v->rip6[1] == o->target[1] &&
	       v->rip6[2] == o->target[2] && v->rip6[3] == o->target[3];
}

/* The record of a socket at TCP_CONNECT_CB, copied to rec: from its handoff
 * slot (returns 1), else from sg_socks (its slot was taken, or the previous
 * program generation's connect4 redirected it; the record stays there for
 * that generation's getpeername during an upgrade and goes at the close) or
 * from socket storage (the generation before), returns 2. Returns 0 when the
 * socket was not redirected, -1 when its record was lost (rec holds what is
 * known). */
static __always_inline int sops_record(struct bpf_sock_ops *skops, __u64 cookie,
				       struct sg_origin *rec)
{
	int r = handoff_take(cookie, rec);
	if (r > 0)
		return 1;
	/* A claim that failed (r < 0) lost a race with the connect that is
	 * moving the record to sg_socks: look again while it does. */
	int tries = r < 0 ? 32 : 1;
	for (int n = 0; n < tries; n++) {
		struct sg_origin *o = bpf_map_lookup_elem(&sg_socks, &cookie);
		if (o) {
			*rec = *o;
			return 2;
		}
	}
	if (r < 0)
		return -1;
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 0;
	struct sg_origin *st = bpf_sk_storage_get(&sg_origins, sk, 0, 0);
	if (!st)
		return 0;
	*rec = *st;
	return 2;
}

/* Cut a redirected socket off: the egress backstop drops every packet of a
 * socket whose storage says SG_F_UNRECORDED (storage is only created here,
 * on this failure path). Called before the SYN is sent, so egress sees the
 * flag on the first packet. */
static __always_inline void sops_unrecorded(struct bpf_sock_ops *skops, const struct sg_origin *o)
{
	struct who w = {
		.cgroup_id = o->cgroup_id,
		.pid = o->pid,
		.uid = o->uid,
	};
	struct bpf_sock *sk = skops->sk;
	if (sk) {
		struct sg_origin *st = bpf_sk_storage_get(&sg_origins, sk, 0,
							  BPF_SK_STORAGE_GET_F_CREATE);
		if (st) {
			*st = *o;
			st->flags |= SG_F_REDIRECTED | SG_F_UNRECORDED;
		}
	}
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&sg_unrecorded, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	refuse(&w, SG_TUPLE_UPDATE_FAILED, SG_HOOK_SOCKOPS, IPPROTO_TCP, o->addr, o->port);
}

/* TCP_CONNECT_CB, before the SYN: move the socket's record into the tuple
 * map under its local address and port, and ask for the state callback that
 * removes it on close. A socket whose peer port is no gateway port costs
 * nothing more here. */
static __always_inline void sops_connect(struct bpf_sock_ops *skops)
{
	struct sops_view v;
	struct sg_tuple_key k = {};
	struct sg_origin rec;

	sops_read(skops, &v);
	/* remote_port is the port in network order as a u32. */
	if (!gateway_port(skops, bpf_htons((__u16)bpf_ntohl(v.rport))))
		return;
	__u64 cookie = bpf_get_socket_cookie(skops);
	int r = sops_record(skops, cookie, &rec);
	if (r == 0)
		return;
	if (r < 0) {
		sops_unrecorded(skops, &rec);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		return;
	}
	if (!(rec.flags & SG_F_REDIRECTED) || !sops_is_target(&v, &rec))
		return;
	tuple_key(&v, rec.flags & SG_F_V4, &k);
	rec.cookie = cookie;
	rec.flags &= ~SG_F_NOSOCK;
	if (r == 1)
		rec.flags |= SG_F_NOSOCK;
	/* Its sg_conns slot, or sg_tuples when the slot holds another
	 * connection. */
	if (conn_put(&k, &rec) || bpf_map_update_elem(&sg_tuples, &k, &rec, BPF_ANY) == 0)
		count(SG_TUPLE_RECORDED);
	else
		sops_unrecorded(skops, &rec);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* TCP_CLOSE of a redirected socket: wipe its sg_conns slot or remove its
 * sg_tuples record, and its sg_socks record unless the tuple record says
 * there is none (SG_F_NOSOCK: handed over through a slot). The key is derived
 * from the socket alone. */
static __always_inline void sops_close(struct bpf_sock_ops *skops)
{
	struct sops_view v;
	struct sg_tuple_key k = {};
	__u64 cookie = bpf_get_socket_cookie(skops);

	sops_read(skops, &v);
	tuple_key(&v, sops_v4(&v), &k);
	struct sg_conn *c = conn_of(&k);
	if (c && c->o.cookie == cookie) {
		__u8 slot_nosock = c->o.flags & SG_F_NOSOCK;
		conn_wipe(c);
		count(SG_TUPLE_DELETED);
		if (!slot_nosock)
			bpf_map_delete_elem(&sg_socks, &cookie);
		return;
	}
	struct sg_origin *rec = bpf_map_lookup_elem(&sg_tuples, &k);
	/* The cookie check keeps a late close from deleting the record of a
	 * newer socket that reuses the same local port. */
	if (rec && rec->cookie == cookie) {
		__u8 nosock = rec->flags & SG_F_NOSOCK;
		bpf_map_delete_elem(&sg_tuples, &k);
		count(SG_TUPLE_DELETED);
		if (nosock)
			return;
	}
	bpf_map_delete_elem(&sg_socks, &cookie);
}

/* sockops runs for every TCP op of every socket in the cgroup (8 per connect,
 * most of them fixed by the kernel): all but the two below return at once.
 * The state callback is only enabled on redirected sockets. */
SEC("sockops")
int sg_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		sops_connect(skops);
	else if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == SG_TCP_CLOSE)
		sops_close(skops);
	return 1;
}

SEC("cgroup/sock_create")
int sg_sock_create(struct bpf_sock *ctx)
{
	struct who w;
	__u32 none[4] = {};

	/* The socket's type and protocol first: the caller's cgroup is only
	 * needed to refuse (the gateway's own cgroup never is). */
	if (ctx->type == SG_SOCK_RAW) {
		who_init(&w);
		if (excluded(w.cgroup_id))
			return 1;
		who_task(&w);
		refuse(&w, SG_REFUSED_RAW, SG_HOOK_SOCK_CREATE, (__u8)ctx->protocol, none, 0);
		return 0;
	}
	/* Only TCP (and MPTCP), UDP and ping sockets. UDP-Lite, SCTP and DCCP
	 * are refused here because connect4 does not run for every one of
	 * them (UDP-Lite connect() skips it), and a connected socket's sends
	 * never reach sendmsg4. */
	__u32 proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != SG_IPPROTO_MPTCP &&
	    proto != IPPROTO_ICMP && proto != SG_IPPROTO_ICMPV6) {
		who_init(&w);
		if (excluded(w.cgroup_id))
			return 1;
		who_task(&w);
		refuse(&w, SG_REFUSED_PROTO, SG_HOOK_SOCK_CREATE, (__u8)proto, none, 0);
		return 0;
	}
	return 1;
}

/* Is this destination one of the gateway's own addresses? */
static __always_inline int is_gateway(const __u32 a[4])
{
	if (is_v4mapped(a)) {
		__u32 ip = a[3];
		return (ip != 0) && (ip == proxy4_ip || ip == host_proxy4_ip || ip == dns4_ip ||
				     ip == host_dns4_ip);
	}
	if (proxy6_port != 0 && a[0] == proxy6_ip[0] && a[1] == proxy6_ip[1] &&
	    a[2] == proxy6_ip[2] && a[3] == proxy6_ip[3])
		return 1;
	if (dns6_port != 0 && a[0] == dns6_ip[0] && a[1] == dns6_ip[1] && a[2] == dns6_ip[2] &&
	    a[3] == dns6_ip[3])
		return 1;
	return 0;
}

struct sg_ipv6_opt {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 frag_off; /* fragment header only */
};

/* The headers egress needs: destination, transport protocol and the offset of
 * the transport header (all five transports it polices start with the source
 * and destination ports). */
struct sg_pkt {
	__u32 daddr[4]; /* network order, v4 as ::ffff:x */
	__u32 off;
	__u8 proto;
	__u8 too_deep;  /* IPv6 extension headers beyond what is followed */
};

enum { PKT_PASS, PKT_PARSED };

/* Fast path: the headers in the linear data, read directly (no helper call).
 * Returns 1 when it parsed the packet, 0 to fall back to parse_slow (short
 * linear data, IPv4 options, IPv6 extension headers), -1 for a packet that
 * carries no ports to police (not IP, a later fragment). */
static __always_inline int parse_fast(struct __sk_buff *skb, struct sg_pkt *p, __be16 *dport)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data;
		if ((void *)ip + sizeof(*ip) + 4 > end)
			return 0;
		if (ip->ihl != 5)
			return 0;
		if (ip->frag_off & bpf_htons(0x1fff))
			return -1; /* not the first fragment: no ports here */
		p->proto = ip->protocol;
		p->off = sizeof(*ip);
		v4mapped(p->daddr, ip->daddr);
		*dport = *(__be16 *)((void *)ip + sizeof(*ip) + 2);
		return 1;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data;
		if ((void *)ip6 + sizeof(*ip6) + 4 > end)
			return 0;
		__u8 nh = ip6->nexthdr;
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
		    nh == IPPROTO_FRAGMENT || nh == IPPROTO_AH)
			return 0;
		p->proto = nh;
		p->off = sizeof(*ip6);
		p->daddr[0] = ip6->daddr.in6_u.u6_addr32[0];
		p->daddr[1] = ip6->daddr.in6_u.u6_addr32[1];
		p->daddr[2] = ip6->daddr.in6_u.u6_addr32[2];
		p->daddr[3] = ip6->daddr.in6_u.u6_addr32[3];
		*dport = *(__be16 *)((void *)ip6 + sizeof(*ip6) + 2);
		return 1;
	}
	return -1;
}

/* Slow path: bpf_skb_load_bytes, IPv4 options and up to six IPv6 extension
 * headers. Returns 1 when parsed (p->too_deep set when the chain is longer),
 * -1 for a packet with no ports to police. */
static __noinline int parse_slow(struct __sk_buff *skb, struct sg_pkt *p, __be16 *dport)
{
	__u8 proto;
	__u32 off;

	p->too_deep = 0;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1; /* not the first fragment: no ports here */
		proto = ip.protocol;
		off = ip.ihl * 4;
		v4mapped(p->daddr, ip.daddr);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		struct sg_ipv6_opt opt;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return -1;
		p->daddr[0] = ip6.daddr.in6_u.u6_addr32[0];
		p->daddr[1] = ip6.daddr.in6_u.u6_addr32[1];
		p->daddr[2] = ip6.daddr.in6_u.u6_addr32[2];
		p->daddr[3] = ip6.daddr.in6_u.u6_addr32[3];
		proto = ip6.nexthdr;
		off = sizeof(ip6);
		int i;
#pragma unroll
		for (i = 0; i < 6; i++) {
			if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING &&
			    proto != IPPROTO_DSTOPTS && proto != IPPROTO_FRAGMENT &&
			    proto != IPPROTO_AH)
				break;
			if (bpf_skb_load_bytes(skb, off, &opt, sizeof(opt)) < 0)
				return -1;
			if (proto == IPPROTO_FRAGMENT) {
				if (opt.frag_off & bpf_htons(0xfff8))
					return -1;
				off += 8;
			} else if (proto == IPPROTO_AH) {
				off += ((__u32)opt.hdrlen + 2) * 4;
			} else {
				off += ((__u32)opt.hdrlen + 1) * 8;
			}
			proto = opt.nexthdr;
		}
		if (i == 6) {
			p->proto = proto;
			p->too_deep = 1;
			return 1;
		}
	} else {
		return -1;
	}
	p->proto = proto;
	p->off = off;
	*dport = 0;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_UDPLITE &&
	    proto != IPPROTO_SCTP && proto != IPPROTO_DCCP)
		return 1;
	if (bpf_skb_load_bytes(skb, off + 2, dport, sizeof(*dport)) < 0)
		return -1;
	return 1;
}

/* Would this destination port have been redirected or refused by the socket
 * hooks? Then a packet still carrying it escaped them. */
static __always_inline int escaped(__u8 proto, __u16 port)
{
	if (port == SG_PORT_DOT)
		return 1;
	if (proto == IPPROTO_TCP)
		return is_intercepted(port) || (port == SG_PORT_DNS && dns_enabled());
	if (proto == IPPROTO_UDP)
		return port == SG_PORT_HTTPS || (port == SG_PORT_DNS && dns_enabled());
	return is_intercepted(port) || port == SG_PORT_HTTPS || port == SG_PORT_DNS;
}

/* Drop a packet unless it comes from the gateway's own cgroup. */
static __always_inline int drop(struct __sk_buff *skb, __u8 proto, const __u32 addr[4],
				__u16 port)
{
	struct who w = {};

	w.cgroup_id = bpf_skb_cgroup_id(skb);
	if (excluded(w.cgroup_id))
		return 1;
	w.uid = bpf_get_socket_uid(skb);
	refuse(&w, SG_EGRESS_DROPPED, SG_HOOK_EGRESS, proto, addr, port);
	return 0;
}

/* Backstop for anything that escaped the socket hooks (sockets created before
 * the programs were attached, a detached connect link, unrecorded sockets).
 * Data starts at the network header.
 *
 * Hot path (every packet of every agent socket): the headers are read straight
 * from the linear data, the caller's cgroup is only asked for when a packet is
 * about to be dropped, and a TCP packet's socket storage is only looked at once
 * sockops has marked some socket unrecorded (sg_unrecorded). */
SEC("cgroup_skb/egress")
int sg_egress(struct __sk_buff *skb)
{
	struct sg_pkt p;
	__be16 dport = 0;

	p.too_deep = 0;
	int r = parse_fast(skb, &p, &dport);
	if (r == 0)
		r = parse_slow(skb, &p, &dport);
	if (r < 0)
		return 1;
	if (p.too_deep)
		/* Too many extension headers to see the ports: refuse. */
		return drop(skb, p.proto, p.daddr, 0);

	/* A redirected socket whose tuple could not be recorded (sockops):
	 * none of its packets may leave. */
	if (p.proto == IPPROTO_TCP) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&sg_unrecorded, &zero);
		if (n && *n && skb->sk) {
			struct bpf_sock *sk = bpf_sk_fullsock(skb->sk);
			if (sk) {
				struct sg_origin *o = bpf_sk_storage_get(&sg_origins, sk, 0, 0);
				if (o && (o->flags & SG_F_UNRECORDED))
					return drop(skb, o->proto, o->addr, o->port);
			}
		}
	}

	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP && p.proto != IPPROTO_UDPLITE &&
	    p.proto != IPPROTO_SCTP && p.proto != IPPROTO_DCCP)
		return 1;
	if (!escaped(p.proto, bpf_ntohs(dport)) || is_gateway(p.daddr))
		return 1;
	return drop(skb, p.proto, p.daddr, dport);
}

package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// DefaultLearnGrace is how long a learned Snowflake address outlives the TTL
// of the answer it came in: clients cache answers a little longer than the
// TTL says, and connect a moment after they resolved.
const DefaultLearnGrace = 30 * time.Second

// MaxLearnedAddrs bounds the learned-address map (sg_snowflake_addrs); past
// it, the least recently used entries are evicted.
const MaxLearnedAddrs = 16384

// SnowflakeAddrs is the pinned BPF map (sg_snowflake_addrs in the redirect's
// pin directory) of the addresses the DNS listener saw in answers for
// Snowflake names. The listener writes an answer's addresses before it
// releases the answer (Learn); the gateway's domain-fronting check asks
// Contains: a known Snowflake address reached with a foreign server name is
// refused. Each entry expires with the answer's TTL plus a grace period.
//
// The map is pinned by name, shared with Install (which creates it when
// missing) and survives daemon restarts and upgrades; only Uninstall
// removes it. Expiry times are on CLOCK_BOOTTIME, which keeps counting across
// restarts (and suspends), so entries learned by a previous daemon stay valid
// exactly as long as their TTL says.
type SnowflakeAddrs struct {
	m     *ebpf.Map
	grace time.Duration
	mu    sync.Mutex // serialises read-modify-write of entries
}

// OpenSnowflakeAddrs opens the learned-address map pinned in pinDir
// (DefaultPinDir when empty), creating and pinning it when missing. The DNS
// listener can therefore learn before the redirect is installed.
func OpenSnowflakeAddrs(pinDir string) (*SnowflakeAddrs, error) {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	if err := ensureBPFFS(pinDir); err != nil {
		return nil, fmt.Errorf("open learned Snowflake addresses: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("open learned Snowflake addresses: %w", err)
	}
	spec, err := loadSnowgate()
	if err != nil {
		return nil, fmt.Errorf("open learned Snowflake addresses: %w", err)
	}
	ms, ok := spec.Maps[snowgateMapSgSnowflakeAddrs]
	if !ok {
		return nil, fmt.Errorf("open learned Snowflake addresses: map %s missing from the eBPF object", snowgateMapSgSnowflakeAddrs)
	}
	ms = ms.Copy()
	ms.Pinning = ebpf.PinByName
	m, err := ebpf.NewMapWithOptions(ms, ebpf.MapOptions{PinPath: pinDir})
	if err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("open learned Snowflake addresses: pinned map in %s has another layout (run `snowgate uninstall` first): %w", pinDir, err)
		}
		return nil, fmt.Errorf("open learned Snowflake addresses in %s: %w", pinDir, err)
	}
	return &SnowflakeAddrs{m: m, grace: DefaultLearnGrace}, nil
}

// SetGrace changes how long entries learned from now on outlive their TTL
// (DefaultLearnGrace by default; negative counts as zero).
func (s *SnowflakeAddrs) SetGrace(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grace = max(d, 0)
}

// bootNow is CLOCK_BOOTTIME, the clock of the entries' expiry.
func bootNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime(CLOCK_BOOTTIME): %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

func addrKey(a netip.Addr) snowgateSgAddr {
	return snowgateSgAddr{Addr: ip6Words(a.WithZone(""))}
}

// Learn records addrs as Snowflake addresses until ttl plus the grace period
// from now. An entry that already lasts longer (another name, a longer TTL)
// keeps its expiry. It returns only once every address is in the map, so a
// DNS answer released after it is never ahead of the map.
func (s *SnowflakeAddrs) Learn(addrs []netip.Addr, ttl time.Duration) error {
	now, err := bootNow()
	if err != nil {
		return fmt.Errorf("learn Snowflake addresses: %w", err)
	}
	ttl = max(ttl, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	expires := uint64(now + ttl + s.grace)
	ttlSec := uint32(min(ttl/time.Second, 1<<32-1))
	for _, a := range addrs {
		if !a.IsValid() || a.IsUnspecified() {
			continue
		}
		key := addrKey(a)
		var cur snowgateSgLearned
		if err := s.m.Lookup(&key, &cur); err == nil && cur.ExpiresNs >= expires {
			continue
		}
		v := snowgateSgLearned{ExpiresNs: expires, Ttl: ttlSec}
		if err := s.m.Put(&key, &v); err != nil {
			return fmt.Errorf("learn Snowflake address %v: %w", a, err)
		}
	}
	return nil
}

// Contains reports whether a is a Snowflake address learned from DNS whose
// entry has not expired. v4-mapped addresses match their IPv4 form. An
// expired entry is removed. When the map cannot be read (a closed handle at
// shutdown), it reports true: the fronting check then refuses rather than
// passes through.
func (s *SnowflakeAddrs) Contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	key := addrKey(a)
	var v snowgateSgLearned
	if err := s.m.Lookup(&key, &v); err != nil {
		return !errors.Is(err, ebpf.ErrKeyNotExist)
	}
	now, err := bootNow()
	if err != nil {
		// Cannot tell the time: an entry exists, so err on the side of
		// refusing fronting.
		return true
	}
	if uint64(now) < v.ExpiresNs {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Learn may have refreshed it meanwhile.
	if err := s.m.Lookup(&key, &v); err == nil && uint64(now) >= v.ExpiresNs {
		_ = s.m.Delete(&key)
	}
	return false
}

// LearnedAddr is one entry of the learned-address map.
type LearnedAddr struct {
	// Addr is the Snowflake address (IPv4 unmapped).
	Addr netip.Addr
	// TTL is the TTL of the answer that last extended the entry.
	TTL time.Duration
	// ExpiresIn is how long the entry stays valid from now.
	ExpiresIn time.Duration
}

// List returns the entries that have not expired, sorted by address.
func (s *SnowflakeAddrs) List() ([]LearnedAddr, error) {
	now, err := bootNow()
	if err != nil {
		return nil, fmt.Errorf("list learned Snowflake addresses: %w", err)
	}
	var (
		key  snowgateSgAddr
		val  snowgateSgLearned
		out  []LearnedAddr
		iter = s.m.Iterate()
	)
	for iter.Next(&key, &val) {
		if val.ExpiresNs <= uint64(now) {
			continue
		}
		out = append(out, LearnedAddr{
			Addr:      wordsAddr(key.Addr, true),
			TTL:       time.Duration(val.Ttl) * time.Second,
			ExpiresIn: time.Duration(val.ExpiresNs - uint64(now)),
		})
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list learned Snowflake addresses: %w", err)
	}
	slices.SortFunc(out, func(a, b LearnedAddr) int { return a.Addr.Compare(b.Addr) })
	return out, nil
}

// Close releases the handle; the pinned map and its entries stay. Learn and
// Contains may still be called (a DNS query in flight at shutdown): they fail
// and report false.
func (s *SnowflakeAddrs) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.m.Close(); err != nil {
		return fmt.Errorf("close learned Snowflake addresses: %w", err)
	}
	return nil
}

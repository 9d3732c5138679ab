package approval

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Instance names one run of a gateway process: the claimer of an approved
// statement's run. A successor on the same host tells from it whether the
// claimer is gone (see Dead); elsewhere only the claim's lease counts.
type Instance struct {
	// ID is random per process start.
	ID string `json:"id"`
	// Host is the host name, for people reading the store.
	Host string `json:"host,omitempty"`
	// BootID is the kernel's boot id (/proc/sys/kernel/random/boot_id):
	// pids compare only within one boot of one host.
	BootID string `json:"boot_id,omitempty"`
	// PIDNS is the process's pid namespace (/proc/self/ns/pid): pids
	// compare only within one namespace.
	PIDNS string `json:"pid_ns,omitempty"`
	// PID and Start (field 22 of /proc/<pid>/stat, clock ticks after
	// boot) name the process; a pid reused later has another start time.
	PID   int    `json:"pid,omitempty"`
	Start uint64 `json:"start,omitempty"`
}

// String renders the instance for logs.
func (i Instance) String() string {
	if i.PID == 0 {
		return i.ID
	}
	return fmt.Sprintf("%s (host %s pid %d)", i.ID, i.Host, i.PID)
}

// self is this process's instance, computed once.
var self = sync.OnceValue(func() Instance {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("approval: no randomness: " + err.Error())
	}
	in := Instance{ID: "gw_" + hex.EncodeToString(b[:]), PID: os.Getpid()}
	in.Host, _ = os.Hostname()
	if id, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		in.BootID = strings.TrimSpace(string(id))
	}
	in.PIDNS, _ = os.Readlink("/proc/self/ns/pid")
	in.Start, _ = ProcessStart(in.PID)
	return in
})

// Self returns this process's gateway instance: the same value for the
// life of the process.
func Self() Instance { return self() }

// ProcessStart returns the start time of process pid (field 22 of
// /proc/<pid>/stat, in clock ticks after boot).
func ProcessStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return parseStatStart(string(b))
}

// parseStatStart reads starttime from a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may hold spaces and parentheses,
// so the fields are counted from the last ')'.
func parseStatStart(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command name")
	}
	// After ')' come fields 3 (state) onwards: starttime, field 22, is
	// the 20th of them.
	f := strings.Fields(stat[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 20", len(f))
	}
	n, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: starttime: %w", err)
	}
	return n, nil
}

// Dead reports whether i can tell that instance o no longer runs: o ran in
// this boot of this host, in this pid namespace, and its pid is gone or
// now belongs to a process started at another time. False means alive or
// unknown (another host, another boot, a claim without an instance).
func (i Instance) Dead(o Instance) bool {
	if o.PID <= 0 || o.BootID == "" || o.BootID != i.BootID || o.PIDNS != i.PIDNS {
		return false
	}
	if o.ID == i.ID {
		return false
	}
	start, err := ProcessStart(o.PID)
	if err != nil {
		// No such process (or /proc unreadable: then this process
		// itself would not be found either, and Self has no start).
		return errors.Is(err, fs.ErrNotExist)
	}
	return o.Start != 0 && start != o.Start
}

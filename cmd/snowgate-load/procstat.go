package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// procSample is the gateway process at one moment.
type procSample struct {
	// At is the time since the sampler started.
	At time.Duration `json:"at"`
	// CPU is user plus system time used so far.
	CPU time.Duration `json:"cpu"`
	// RSSKB and HWMKB are the resident and peak resident set (kB).
	RSSKB int64 `json:"rssKB"`
	HWMKB int64 `json:"hwmKB"`
	// Threads and FDs count the process's threads and open descriptors.
	Threads int `json:"threads"`
	FDs     int `json:"fds"`
}

// readProc samples process pid from /proc.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("sample gateway: %w", err)
	}
	// The command name may hold spaces; the fields follow its ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("sample gateway: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime 15.
	if len(f) < 13 {
		return s, fmt.Errorf("sample gateway: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("sample gateway: /proc/%d/stat times: %v %v", pid, err1, err2)
	}
	s.CPU = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("sample gateway: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		switch k {
		case "VmRSS":
			s.RSSKB, _ = strconv.ParseInt(v, 10, 64)
		case "VmHWM":
			s.HWMKB, _ = strconv.ParseInt(v, 10, 64)
		case "Threads":
			s.Threads, _ = strconv.Atoi(v)
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.FDs = len(ents)
	}
	return s, nil
}

// sampler samples a process at a fixed interval until stopped.
type sampler struct {
	pid   int
	every time.Duration
	mu    sync.Mutex
	out   []procSample
	err   error
	stop  context.CancelFunc
	done  chan struct{}
}

// startSampler samples pid every interval, starting now.
func startSampler(pid int, every time.Duration) *sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sampler{pid: pid, every: every, stop: cancel, done: make(chan struct{})}
	start := time.Now()
	take := func() {
		p, err := readProc(pid)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			return
		}
		p.At = time.Since(start).Round(time.Millisecond)
		s.out = append(s.out, p)
	}
	take()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

// finish stops the sampler and returns the samples.
func (s *sampler) finish() ([]procSample, error) {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out, s.err
}

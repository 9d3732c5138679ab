package testenv

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring client: one ring, one IORING_OP_CONNECT, raw syscalls.
// It exists to prove that a connect submitted through io_uring (which takes
// the kernel's __sys_connect_file path, not connect(2)) meets the same cgroup
// hooks. Layouts follow include/uapi/linux/io_uring.h.

// errIOUringSetup marks a failure to create the ring (io_uring disabled by
// the kernel.io_uring_disabled sysctl, or by seccomp), as opposed to a
// failed connect.
var errIOUringSetup = errors.New("io_uring_setup")

const (
	ioringOpConnect       = 16
	ioringEnterGetevents  = 1
	ioringOffSQRing       = 0
	ioringOffCQRing       = 0x8000000
	ioringOffSQEs         = 0x10000000
	ioringSetupEntries    = 2
	sizeofIOUringSQE      = 64
	sizeofIOUringCQE      = 16
	ioringUserDataConnect = 0x5107
)

type ioSQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type ioCQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type ioUringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  ioSQRingOffsets
	CQOff                                                                  ioCQRingOffsets
}

type ioUringSQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64 // connect: addrlen
	Addr        uint64 // connect: struct sockaddr *
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	Pad         uint64
}

type ioUringCQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// ioUringConnect connects fd to sa through io_uring and returns the
// connect's own result.
func ioUringConnect(fd int, sa unix.Sockaddr) error {
	var p ioUringParams
	rfd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, ioringSetupEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return fmt.Errorf("%w: %w", errIOUringSetup, errno)
	}
	ring := int(rfd)
	defer unix.Close(ring)

	sqSize := int(p.SQOff.Array + p.SQEntries*4)
	cqSize := int(p.CQOff.CQEs + p.CQEntries*sizeofIOUringCQE)
	sq, err := unix.Mmap(ring, ioringOffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("%w: mmap sq ring: %w", errIOUringSetup, err)
	}
	defer unix.Munmap(sq)
	cq, err := unix.Mmap(ring, ioringOffCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("%w: mmap cq ring: %w", errIOUringSetup, err)
	}
	defer unix.Munmap(cq)
	sqes, err := unix.Mmap(ring, ioringOffSQEs, int(p.SQEntries)*sizeofIOUringSQE, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("%w: mmap sqes: %w", errIOUringSetup, err)
	}
	defer unix.Munmap(sqes)

	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	name, nameLen := rawSockaddr(sa)
	if name == nil {
		return errors.New("io_uring connect: not an inet address")
	}
	tail := atomic.LoadUint32(u32(sq, p.SQOff.Tail))
	mask := atomic.LoadUint32(u32(sq, p.SQOff.RingMask))
	idx := tail & mask
	sqe := (*ioUringSQE)(unsafe.Pointer(&sqes[idx*sizeofIOUringSQE]))
	*sqe = ioUringSQE{
		Opcode:   ioringOpConnect,
		Fd:       int32(fd),
		Off:      uint64(nameLen),
		Addr:     uint64(uintptr(name)),
		UserData: ioringUserDataConnect,
	}
	*(*uint32)(unsafe.Pointer(&sq[p.SQOff.Array+idx*4])) = idx
	atomic.StoreUint32(u32(sq, p.SQOff.Tail), tail+1)

	for {
		_, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(ring), 1, 1, ioringEnterGetevents, 0, 0)
		if errno != unix.EINTR {
			break
		}
		// Interrupted before submitting? Then submit again; after, just wait.
		if atomic.LoadUint32(u32(sq, p.SQOff.Head)) != tail {
			for {
				_, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(ring), 0, 1, ioringEnterGetevents, 0, 0)
				if errno != unix.EINTR {
					break
				}
			}
			break
		}
	}
	runtime.KeepAlive(name)
	if errno != 0 {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	head := atomic.LoadUint32(u32(cq, p.CQOff.Head))
	if head == atomic.LoadUint32(u32(cq, p.CQOff.Tail)) {
		return errors.New("io_uring connect: no completion")
	}
	cmask := atomic.LoadUint32(u32(cq, p.CQOff.RingMask))
	cqe := (*ioUringCQE)(unsafe.Pointer(&cq[p.CQOff.CQEs+(head&cmask)*sizeofIOUringCQE]))
	res, ud := cqe.Res, cqe.UserData
	atomic.StoreUint32(u32(cq, p.CQOff.Head), head+1)
	if ud != ioringUserDataConnect {
		return fmt.Errorf("io_uring connect: completion for %#x", ud)
	}
	if res < 0 {
		return unix.Errno(-res)
	}
	return nil
}

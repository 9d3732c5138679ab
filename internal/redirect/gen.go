package redirect

// The eBPF objects are generated from bpf/snowgate.c by bpf2go and committed
// (snowgate_bpfel.go and snowgate_bpfel.o), so building snowgate needs no C
// compiler. `make generate` rebuilds them with the pinned clang; `make
// check-generate` proves the committed objects match the sources.
//
// -target bpfel serves every little-endian architecture (amd64, arm64, ...).
// The include directory holds arch-neutral asm/ shims so the object does not
// depend on the build host's multiarch headers. -mcpu=v3 for the atomic
// exchange and compare-and-swap of the connect4-to-sockops handoff slots
// (Linux 5.12).
//go:generate go tool bpf2go -target bpfel -type sg_event -type sg_origin -type sg_tuple_key -type sg_netns_target -type sg_reason -type sg_hook -type sg_addr -type sg_learned -type sg_conn snowgate ../../bpf/snowgate.c -- -O2 -mcpu=v3 -g -Wall -Werror -I../../bpf/include

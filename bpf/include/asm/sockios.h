/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * Architecture shim for the BPF target: the eBPF programs are compiled for
 * little-endian BPF (bpfel) on every host, so the uapi headers get the generic
 * definitions instead of the build host's multiarch asm/ directory. This keeps
 * the generated objects independent of the machine that builds them.
 */
#ifndef _SNOWGATE_ASM_SOCKIOS_H
#define _SNOWGATE_ASM_SOCKIOS_H
#include <asm-generic/sockios.h>
#endif

# snowgate build entry points. Every target works on a fresh Debian 12 machine
# with Go installed; `generate` additionally needs the pinned clang (see CLANG).

GO       ?= go
# The pinned compiler for the eBPF objects. The committed objects were built with
# it; `make check-generate` proves they still match the sources.
CLANG    ?= clang-19
STRIP    ?= llvm-strip-19
BIN      := bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
NODE_DIR := internal/testenv/node

.PHONY: all build generate check-generate test test-short node-deps demo bench fuzz vet fmt-check clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Rebuild the eBPF objects and their Go bindings (bpf2go) from bpf/*.c. The
# objects depend only on the repository, the pinned clang and the Debian uapi
# and libbpf headers: bpf2go maps the source directory out of the debug info
# and bpf/include supplies arch-neutral asm/ headers.
generate:
	BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) $(GO) generate ./internal/redirect/...

# Fails when the committed eBPF objects differ from what the pinned clang builds.
check-generate: generate
	git diff --exit-code -- internal/redirect bpf
	@untracked=$$(git ls-files --others --exclude-standard -- internal/redirect bpf | grep -E '_bpfe[lb]\.(go|o)$$'); \
	if [ -n "$$untracked" ]; then echo "generated but not committed:"; echo "$$untracked"; exit 1; fi

# The Node driver used by the conformance tests, from the committed lock file.
node-deps:
	@if [ -f $(NODE_DIR)/package-lock.json ]; then \
		cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error; \
	fi

# The full suite. Tests that need root skip (and say so) when not root.
test: node-deps
	$(GO) test -count=1 -timeout 45m ./...

test-short:
	$(GO) test -count=1 -short ./...

demo: build
	./$(BIN)/snowgate demo

bench: build node-deps
	./scripts/bench.sh

fuzz:
	./scripts/fuzz.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb].go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf $(BIN)

# The .deb package (appliance/nfpm.yaml). nfpm comes from the tools module
# (tools/go.mod), so the main module does not depend on it.
.PHONY: deb
deb: build
	$(GO) -C tools build -o $(CURDIR)/$(BIN)/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm
	SNOWGATE_VERSION=$$(echo '$(VERSION)' | sed 's/^v//; s/^\([^0-9]\)/0.0.0~git\1/; s/-/./g') \
	SNOWGATE_ARCH=$$($(GO) env GOARCH) \
	./$(BIN)/nfpm package --config appliance/nfpm.yaml --packager deb --target $(BIN)/

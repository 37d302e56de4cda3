package initramfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/mkuimage/uimage/builder"
	"github.com/u-root/uio/llog"

	"github.com/locus-ssi/locus"
	"github.com/locus-ssi/locus/internal/atomicfile"
)

// CoreCommands are the u-root commands in every image, built into one
// gobusybox binary (/bbin/bb). u-root's own init is left out: /init is
// Locus's.
func CoreCommands() []string {
	names := []string{
		"backoff", "base64", "basename", "bind", "blkid", "brctl", "cat", "chmod", "chroot", "cmp", "comm", "cp",
		"cpio", "date", "dd", "df", "dhclient", "dirname", "dmesg", "du", "echo", "false", "find", "free",
		"fusermount", "gosh", "gpgv", "gpt", "grep", "gzip", "head", "hexdump", "hostname", "hwclock", "id",
		"insmod", "io", "ip", "kexec", "kill", "lddfiles", "ln", "lockmsrs", "losetup", "ls", "lsdrivers", "lsfd",
		"lsmod", "man", "md5sum", "mkdir", "mkfifo", "mknod", "mktemp", "more", "mount", "msr", "mv", "netcat",
		"netstat", "nohup", "ntpdate", "pci", "pidof", "ping", "poweroff", "printenv", "ps", "pwd", "readlink",
		"realpath", "rm", "rmmod", "rsdp", "scp", "seq", "service", "shasum", "shutdown", "sleep", "sort", "sshd",
		"strace", "strings", "stty", "switch_root", "sync", "tail", "tar", "tee", "time", "timeout", "touch", "tr",
		"truncate", "ts", "tsort", "tty", "umount", "uname", "uniq", "unmount", "unshare", "update-rc.d", "uptime",
		"watchdog", "watchdogd", "wc", "wget", "which", "xargs", "yes",
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "github.com/u-root/u-root/cmds/core/" + n
	}
	return out
}

// baseKey identifies a base archive: the Go toolchain, the module
// requirements and the command list, and the format's version (v2: zstd
// at its best level). Same key, same bytes.
func baseKey(goVersion string) string {
	h := sha256.New()
	fmt.Fprintf(h, "locus-base v2\n%s\nlinux/amd64\n", goVersion)
	h.Write(locus.GoMod)
	h.Write(locus.GoSum)
	for _, c := range CoreCommands() {
		fmt.Fprintln(h, c)
	}
	fmt.Fprintln(h, baseBuildTags())
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// goEnv returns the version and GOROOT of the go on PATH.
func goEnv(ctx context.Context) (version, goroot string, err error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOROOT").Output()
	if err != nil {
		return "", "", fmt.Errorf("initramfs: the u-root base is built with Go, and `go env` failed: %w (install Go 1.24+ and put it on PATH)", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", "", fmt.Errorf("initramfs: `go env GOVERSION GOROOT` printed %q", out)
	}
	return f[0], f[1], nil
}

// baseBuildTags are the Go build tags of the base. goshliner gives gosh
// the liner line editor: the default one queries the terminal and stalls
// on a serial console, which never answers.
func baseBuildTags() []string { return []string{"goshliner"} }

var moduleLineRE = regexp.MustCompile(`(?m)^module .*$`)

// Base returns the path of the compressed u-root base archive, building it
// with mkuimage/gobusybox into cacheDir when it is not there yet. The base
// holds /bbin/bb with the core commands and their links, and /bin/sh.
func Base(ctx context.Context, cacheDir string, comp Compression, progress io.Writer, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if progress == nil {
		progress = io.Discard
	}
	gv, goroot, err := goEnv(ctx)
	if err != nil {
		return "", err
	}
	key := baseKey(gv)
	path := filepath.Join(cacheDir, "initramfs", "base-"+key+".cpio"+comp.Ext())
	if _, err := os.Stat(path); err == nil {
		log.Info("initramfs base cached", "path", path)
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("initramfs: cache: %w", err)
	}
	work, err := os.MkdirTemp(filepath.Dir(path), ".build-")
	if err != nil {
		return "", fmt.Errorf("initramfs: cache: %w", err)
	}
	defer os.RemoveAll(work)

	// A throwaway module with Locus's own requirements, so the core
	// commands build at exactly the versions in go.sum.
	mod := filepath.Join(work, "mod")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", err
	}
	gomod := moduleLineRE.ReplaceAll(locus.GoMod, []byte("module locus.invalid/initramfs-base"))
	var tools bytes.Buffer
	tools.WriteString("//go:build tools\n\npackage tools\n\nimport (\n")
	for _, c := range CoreCommands() {
		fmt.Fprintf(&tools, "\t_ %q\n", c)
	}
	tools.WriteString(")\n")
	for name, data := range map[string][]byte{"go.mod": gomod, "go.sum": locus.GoSum, "tools.go": tools.Bytes()} {
		if err := os.WriteFile(filepath.Join(mod, name), data, 0o644); err != nil {
			return "", fmt.Errorf("initramfs: base module: %w", err)
		}
	}
	tmp := filepath.Join(work, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	cpioPath := filepath.Join(work, "base.cpio")
	fmt.Fprintf(progress, "initramfs: building the u-root base (%d core commands, gobusybox; ~1 min, once)\n", len(CoreCommands()))
	start := time.Now()
	done := make(chan struct{})
	go tick(done, progress, start, "initramfs: still building the u-root base")
	l := llog.New(slog.LevelWarn, func(format string, v ...any) { log.Debug(fmt.Sprintf(format, v...)) })
	err = uimage.Create(l,
		uimage.WithEnv(golang.DisableCGO(), golang.WithGOOS("linux"), golang.WithGOARCH("amd64"), golang.WithWorkingDir(mod), golang.WithGOROOT(goroot), golang.WithBuildTag(baseBuildTags()...)),
		uimage.WithTempDir(tmp),
		uimage.WithCommands(nil, builder.Busybox, CoreCommands()...),
		uimage.WithShell("gosh"),
		uimage.WithSkipLDD(),
		uimage.WithCPIOOutput(cpioPath),
	)
	close(done)
	if err != nil {
		return "", fmt.Errorf("initramfs: build u-root base: %w", err)
	}
	raw, err := os.ReadFile(cpioPath)
	if err != nil {
		return "", err
	}
	z, err := comp.Compress(raw)
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, z, 0o644, false); err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "initramfs: u-root base built in %s (%d MB, %d MB compressed)\n", time.Since(start).Round(time.Second), len(raw)>>20, len(z)>>20)
	return path, nil
}

// tick prints a progress line every 15 s until done is closed.
func tick(done <-chan struct{}, w io.Writer, start time.Time, what string) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			fmt.Fprintf(w, "%s (%s)\n", what, time.Since(start).Round(time.Second))
		}
	}
}

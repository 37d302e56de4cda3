package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/locus-ssi/locus/images/layout"

	"github.com/locus-ssi/locus/internal/atomicfile"
	"github.com/locus-ssi/locus/services/locusd"
)

// endpoint is where host-side verbs reach a cluster: a node daemon's
// address. `locus qemu up` saves the one its init node's API port is
// forwarded to.
type endpoint struct {
	Cluster string `json:"cluster"`
	// API is host:port of a node daemon.
	API string `json:"api"`
	// StateDir is the QEMU cluster's state directory, if it is one.
	StateDir string `json:"state_dir,omitempty"`
	// From says where the endpoint came from (flag, env, saved, node).
	From string `json:"-"`
}

// endpointFile is $XDG_STATE_HOME/locus/endpoint.json.
func endpointFile() (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("no home directory for the saved endpoint: give --endpoint or set LOCUS_ENDPOINT")
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "locus", "endpoint.json"), nil
}

func saveEndpoint(ep endpoint) error {
	p, err := endpointFile()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("save endpoint: %w", err)
	}
	b, _ := json.MarshalIndent(ep, "", "  ")
	return atomicfile.Write(p, append(b, '\n'), 0o644, false)
}

// forgetEndpoint removes the saved endpoint if it belongs to stateDir.
func forgetEndpoint(stateDir string) {
	p, err := endpointFile()
	if err != nil {
		return
	}
	if ep, err := readEndpoint(p); err == nil && ep.StateDir == stateDir {
		os.Remove(p)
	}
}

func readEndpoint(p string) (*endpoint, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var ep endpoint
	if err := json.Unmarshal(b, &ep); err != nil || ep.API == "" {
		return nil, fmt.Errorf("saved endpoint %s is damaged (remove it, or run `locus qemu up` again)", p)
	}
	return &ep, nil
}

// resolveEndpoint finds the cluster to talk to: the --endpoint flag, then
// $LOCUS_ENDPOINT, then the saved endpoint, then (on a node) the local
// daemon.
func resolveEndpoint(flag string) (*endpoint, error) {
	withPort := func(a string) string {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return net.JoinHostPort(a, strconv.Itoa(locusd.DefaultPort))
		}
		return a
	}
	if flag != "" {
		return &endpoint{API: withPort(flag), From: "--endpoint"}, nil
	}
	if v := os.Getenv("LOCUS_ENDPOINT"); v != "" {
		return &endpoint{API: withPort(v), From: "LOCUS_ENDPOINT"}, nil
	}
	p, err := endpointFile()
	if err == nil {
		ep, err := readEndpoint(p)
		if err == nil {
			ep.From = p
			return ep, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if _, err := os.Stat("/" + layout.SpecPath); err == nil {
		return &endpoint{API: net.JoinHostPort("127.0.0.1", strconv.Itoa(locusd.DefaultPort)), From: "this node"}, nil
	}
	return nil, errors.New("no cluster endpoint: run `locus qemu up`, or give --endpoint HOST[:PORT] (or LOCUS_ENDPOINT)")
}

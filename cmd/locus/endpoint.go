package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/internal/locusconfig"
	"github.com/locus-ssi/locus/services/locusd"
)

// endpoint is where a verb reaches the cluster, and with what.
type endpoint struct {
	// API is host:port of a node daemon, or its socket on this node.
	API    string
	client *locusd.Client
	// Context is the client configuration's context the credential came
	// from ("" on a node, through the local socket).
	Context string
	// From says where the endpoint came from (flag, env, context, node).
	From string
}

// loadConfig reads the client configuration.
func loadConfig() (*locusconfig.Config, string, error) {
	p, err := locusconfig.Path()
	if err != nil {
		return nil, "", err
	}
	c, err := locusconfig.Load(p)
	return c, p, err
}

// resolveEndpoint finds the cluster to talk to and the credential:
//   - the address: --endpoint, else $LOCUS_ENDPOINT, else the context's
//     first endpoint;
//   - the credential: the context (--context, else $LOCUS_CONTEXT, else
//     the one in use), of the client configuration;
//   - on a node, with neither, root reaches its own daemon through the
//     API socket.
func resolveEndpoint(flag, ctxName string) (*endpoint, error) {
	withPort := func(a string) string {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return net.JoinHostPort(a, strconv.Itoa(locusd.DefaultPort))
		}
		return a
	}
	addr, from := flag, "--endpoint"
	if addr == "" {
		addr, from = os.Getenv("LOCUS_ENDPOINT"), "LOCUS_ENDPOINT"
	}
	if ctxName == "" {
		ctxName = os.Getenv("LOCUS_CONTEXT")
	}
	cfg, path, err := loadConfig()
	if err != nil {
		return nil, err
	}
	if filepath.IsAbs(addr) {
		// A daemon's socket on this machine (a loopback cluster's, say).
		return &endpoint{API: addr, client: locusd.LocalClient(addr), From: from}, nil
	}
	if ctxName == "" && cfg.Context == "" && addr == "" {
		if _, err := os.Stat("/" + layout.SpecPath); err == nil {
			// Root has the whole API; every other user the user socket,
			// as who the kernel says it is.
			sock := locusd.SocketPath
			if os.Geteuid() != 0 {
				sock = locusd.UserSocketPath
			}
			return &endpoint{API: sock, client: locusd.LocalClient(sock), From: "this node"}, nil
		}
		return nil, errors.New("no cluster to talk to: run `locus qemu up` (it saves a context with the cluster's credential), or `locus config use NAME`")
	}
	ctx, name, err := cfg.Current(ctxName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if addr == "" {
		if len(ctx.Endpoints) == 0 {
			return nil, fmt.Errorf("%s: context %q has no endpoints (give --endpoint)", path, name)
		}
		addr, from = ctx.Endpoints[0], "context "+name
	}
	tc, err := ctx.TLS()
	if err != nil {
		return nil, fmt.Errorf("%s: context %q: %w", path, name, err)
	}
	addr = withPort(addr)
	return &endpoint{API: addr, client: locusd.NewClient(addr, tc), Context: name, From: from}, nil
}

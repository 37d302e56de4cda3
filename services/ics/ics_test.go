package ics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func nodeAddr(n int) string { return fmt.Sprintf("127.0.79.%d:%d", n, DefaultPort) }

// identity issues node n's certificate for address ip from ca.
func identity(t *testing.T, ca *CA, n int, ip string) Identity {
	t.Helper()
	key, csr, err := NewKey(n)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(csr, n, net.ParseIP(ip), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return Identity{Node: n, CertPEM: cert, KeyPEM: key, CAPEM: ca.CertPEM}
}

func startNode(t *testing.T, id Identity, listen string) *Node {
	t.Helper()
	n, err := Start(Config{Identity: id, Listen: listen, Addr: func(to int) (string, error) { return nodeAddr(to), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func TestCAPersistsAndIssues(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "demo")
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateCA(dir, "other")
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("the CA was not kept: %v", err)
	}
	if _, err := ca.Issue([]byte("not a CSR"), 2, net.ParseIP("10.0.0.2"), time.Hour); err == nil {
		t.Error("issued for garbage")
	}
}

func TestCallsFuturesStreamsOverMutualTLS(t *testing.T) {
	ca, _ := LoadOrCreateCA(t.TempDir(), "t")
	n1 := startNode(t, identity(t, ca, 1, "127.0.79.1"), nodeAddr(1))
	n2 := startNode(t, identity(t, ca, 2, "127.0.79.2"), nodeAddr(2))
	n2.Handle("echo", func(ctx context.Context, from int, req []byte) ([]byte, error) {
		return []byte(fmt.Sprintf("node %d said %s", from, req)), nil
	})
	n2.Handle("fail", func(ctx context.Context, from int, req []byte) ([]byte, error) {
		return nil, errors.New("no such file")
	})
	n2.HandleStream("count", func(ctx context.Context, from int, req []byte, send func([]byte) error) error {
		for i := 1; i <= 3; i++ {
			if err := send([]byte(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return nil
	})
	ctx := context.Background()
	out, err := n1.Call(ctx, 2, "echo", []byte("hi"))
	if err != nil || string(out) != "node 1 said hi" {
		t.Fatalf("Call = %q, %v", out, err)
	}
	if _, err := n1.Call(ctx, 2, "fail", nil); err == nil || !strings.Contains(err.Error(), "no such file") || !strings.Contains(err.Error(), "node 2") {
		t.Errorf("a failing method: %v", err)
	}
	if _, err := n1.Call(ctx, 2, "nope", nil); err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Errorf("an unknown method: %v", err)
	}
	futures := make([]*Future, 20)
	for i := range futures {
		futures[i] = n1.Go(ctx, 2, "echo", []byte(fmt.Sprint(i)))
	}
	for i, f := range futures {
		if out, err := f.Wait(); err != nil || string(out) != fmt.Sprintf("node 1 said %d", i) {
			t.Errorf("future %d = %q, %v", i, out, err)
		}
	}
	var got []string
	if err := n1.Stream(ctx, 2, "count", nil, func(b []byte) error { got = append(got, string(b)); return nil }); err != nil || strings.Join(got, ",") != "1,2,3" {
		t.Errorf("Stream = %v, %v", got, err)
	}
}

func TestDeadlineAndNodeDownCancelCalls(t *testing.T) {
	ca, _ := LoadOrCreateCA(t.TempDir(), "t")
	n1 := startNode(t, identity(t, ca, 1, "127.0.79.1"), nodeAddr(1))
	n2 := startNode(t, identity(t, ca, 2, "127.0.79.2"), nodeAddr(2))
	n2.Handle("hang", func(ctx context.Context, from int, req []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	n2.HandleStream("hang", func(ctx context.Context, from int, req []byte, send func([]byte) error) error {
		send([]byte("first"))
		<-ctx.Done()
		return ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := n1.Call(ctx, 2, "hang", nil); err == nil || !strings.Contains(err.Error(), "DeadlineExceeded") {
		t.Errorf("deadline: %v", err)
	}
	// Calls in flight to node 2 end the moment it is Down.
	f := n1.Go(context.Background(), 2, "hang", nil)
	s := make(chan error, 1)
	go func() {
		s <- n1.Stream(context.Background(), 2, "hang", nil, func([]byte) error { return nil })
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	n1.NodeDown(2)
	if _, err := f.Wait(); !errors.Is(err, ErrNodeDown) {
		t.Errorf("call after NodeDown: %v, want ErrNodeDown", err)
	}
	if err := <-s; !errors.Is(err, ErrNodeDown) {
		t.Errorf("stream after NodeDown: %v, want ErrNodeDown", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("NodeDown took %v to end the calls", d)
	}
}

func TestRefusesStrangersAndStolenCertificates(t *testing.T) {
	ca, _ := LoadOrCreateCA(t.TempDir(), "t")
	n2 := startNode(t, identity(t, ca, 2, "127.0.79.2"), nodeAddr(2))
	called := false
	n2.Handle("echo", func(ctx context.Context, from int, req []byte) ([]byte, error) { called = true; return req, nil })

	// Another cluster's CA: the handshake fails.
	other, _ := LoadOrCreateCA(t.TempDir(), "other")
	strangerID := identity(t, other, 1, "127.0.79.1")
	strangerID.CAPEM = ca.CertPEM
	s := startNode(t, strangerID, "127.0.79.6:0")
	if _, err := s.Call(context.Background(), 2, "echo", nil); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
	// Node 3's certificate (with its key) used from node 4's address.
	thief := startNode(t, identity(t, ca, 3, "127.0.79.3"), "127.0.79.4:0")
	if _, err := thief.Call(context.Background(), 2, "echo", nil); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("a certificate used from another address: %v", err)
	}
	// Garbage on the port: refused, and the server keeps serving.
	c, err := net.Dial("tcp", nodeAddr(2))
	if err == nil {
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n\x00\x01garbage"))
		c.Close()
	}
	tc, err := tls.Dial("tcp", nodeAddr(2), &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		tc.Write([]byte("\x00\x00\x10\x04garbage frame"))
		tc.Close()
	}
	if called {
		t.Error("a refused caller reached the handler")
	}
	n1 := startNode(t, identity(t, ca, 1, "127.0.79.1"), nodeAddr(1))
	if out, err := n1.Call(context.Background(), 2, "echo", []byte("ok")); err != nil || string(out) != "ok" {
		t.Errorf("after the garbage: %q, %v", out, err)
	}
}

// FuzzEnvelope: whatever bytes arrive as a message, decoding refuses or
// accepts them without a crash.
func FuzzEnvelope(f *testing.F) {
	f.Add([]byte(`{"m":"echo","b":"aGk="}`))
	f.Add([]byte(`{"m":1}`))
	f.Add([]byte(`{"b":"!!"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e envelope
		if err := (jsonCodec{}).Unmarshal(data, &e); err == nil {
			if _, err := (jsonCodec{}).Marshal(&e); err != nil {
				t.Fatalf("decoded %q but cannot encode it: %v", data, err)
			}
		}
	})
}

func TestDuplexBothWaysAndNodeDown(t *testing.T) {
	ca, _ := LoadOrCreateCA(t.TempDir(), "t")
	n1 := startNode(t, identity(t, ca, 1, "127.0.79.1"), nodeAddr(1))
	n2 := startNode(t, identity(t, ca, 2, "127.0.79.2"), nodeAddr(2))
	ended := make(chan error, 1)
	n2.HandleDuplex("upper", func(ctx context.Context, from int, recv func() ([]byte, error), send func([]byte) error) error {
		for {
			b, err := recv()
			if errors.Is(err, io.EOF) {
				return send([]byte(fmt.Sprintf("bye node %d", from)))
			}
			if err != nil {
				ended <- err
				return err
			}
			if err := send([]byte(strings.ToUpper(string(b)))); err != nil {
				return err
			}
		}
	})
	ctx := context.Background()
	d, err := n1.OpenDuplex(ctx, 2, "upper")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"a", "bc"} {
		if err := d.Send([]byte(w)); err != nil {
			t.Fatal(err)
		}
		if b, err := d.Recv(); err != nil || string(b) != strings.ToUpper(w) {
			t.Fatalf("Recv = %q, %v", b, err)
		}
	}
	d.CloseSend()
	if b, err := d.Recv(); err != nil || string(b) != "bye node 1" {
		t.Fatalf("after CloseSend: %q, %v", b, err)
	}
	if _, err := d.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
	d.Close()

	// Node 1 goes Down: its stream ends on both sides.
	d, err = n1.OpenDuplex(ctx, 2, "upper")
	if err != nil {
		t.Fatal(err)
	}
	d.Send([]byte("x"))
	d.Recv()
	n2.NodeDown(1)
	select {
	case err := <-ended:
		if !errors.Is(err, ErrNodeDown) {
			t.Errorf("server side ended with %v, want ErrNodeDown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server's handler did not end when the caller's node went Down")
	}
	d2, err := n1.OpenDuplex(ctx, 2, "upper")
	if err != nil {
		t.Fatal(err)
	}
	n1.NodeDown(2)
	if _, err := d2.Recv(); !errors.Is(err, ErrNodeDown) && !strings.Contains(err.Error(), "Down") {
		t.Errorf("caller side after NodeDown: %v", err)
	}
	d.Close()
	d2.Close()
	d3, err := n1.OpenDuplex(ctx, 2, "nope")
	if err == nil {
		_, err = d3.Recv()
		d3.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Errorf("an unknown duplex method: %v", err)
	}
}

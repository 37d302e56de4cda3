package ics

import (
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

func TestOperatorCertificates(t *testing.T) {
	dir := t.TempDir()
	ops, err := LoadOrCreateOperatorCA(dir, "demo")
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := LoadOrCreateCA(dir, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if ops.Cert.Equal(nodes.Cert) {
		t.Fatal("the operators' CA is the nodes' CA")
	}
	_, csr, _ := NewKeyFor("alice")
	pemCert, err := ops.IssueOperator(csr, "alice", []string{RoleOperator, RoleReader}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ParseCertPEM(pemCert)
	op, err := OperatorOf(cert, "demo")
	if err != nil || op.Name != "alice" || len(op.Roles) != 2 {
		t.Errorf("OperatorOf = %+v, %v", op, err)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("an operator certificate may serve: %v", cert.ExtKeyUsage)
	}
	if _, err := OperatorOf(cert, "other"); err == nil {
		t.Error("an operator certificate of cluster demo passed for cluster other")
	}
	// A node certificate is never an operator's, whatever its CN.
	_, ncsr, _ := NewKey(2)
	npem, _ := nodes.Issue(ncsr, 2, net.ParseIP("10.0.0.2"), time.Hour)
	ncert, _ := ParseCertPEM(npem)
	if _, err := OperatorOf(ncert, "demo"); err == nil {
		t.Error("a node certificate passed for an operator's")
	}
	for _, bad := range []struct {
		name  string
		roles []string
		want  string
	}{
		{"node3", []string{RoleAdmin}, "a node's name"},
		{"Alice", []string{RoleAdmin}, "want 1-64"},
		{"-x", []string{RoleAdmin}, "want 1-64"},
		{"", []string{RoleAdmin}, "want 1-64"},
		{"bob", nil, "needs a role"},
		{"bob", []string{"os:admin"}, "unknown role"},
	} {
		if _, err := ops.IssueOperator(csr, bad.name, bad.roles, time.Hour); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("IssueOperator(%q, %v) = %v, want %q", bad.name, bad.roles, err, bad.want)
		}
	}
}

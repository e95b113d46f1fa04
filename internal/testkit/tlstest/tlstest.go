// Package tlstest makes a throwaway certificate authority for tests: a CA,
// a server certificate for the loopback addresses and a client
// certificate, written as PEM files to a temporary folder, for starting
// real TLS servers (nats-server, redis-server, mariadbd) and reaching them.
package tlstest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a throwaway certificate authority and the certificates it issued.
type CA struct {
	Dir string // holds the PEM files below
	// CAFile is the CA's certificate; ServerCert/ServerKey a certificate
	// for 127.0.0.1, ::1 and localhost; ClientCert/ClientKey a client
	// certificate (CN spike-client). OtherCAFile is an unrelated CA's
	// certificate, which trusts none of them.
	CAFile, ServerCert, ServerKey, ClientCert, ClientKey, OtherCAFile string

	pool *x509.CertPool
}

// New makes a CA and its certificates in a temporary folder of t's.
func New(t testing.TB) *CA {
	t.Helper()
	c := &CA{Dir: t.TempDir()}
	caCert, caKey := selfSigned(t, "spike test CA")
	c.CAFile = c.write(t, "ca.pem", "CERTIFICATE", caCert.Raw)
	other, _ := selfSigned(t, "unrelated CA")
	c.OtherCAFile = c.write(t, "other-ca.pem", "CERTIFICATE", other.Raw)
	c.pool = x509.NewCertPool()
	c.pool.AddCert(caCert)

	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	c.ServerCert, c.ServerKey = c.issue(t, "server", server, caCert, caKey)
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "spike-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	c.ClientCert, c.ClientKey = c.issue(t, "client", client, caCert, caKey)
	return c
}

// ServerConfig returns a server-side TLS configuration with the server
// certificate; with mutual set, clients must present a certificate the CA
// issued.
func (c *CA) ServerConfig(t testing.TB, mutual bool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if mutual {
		cfg.ClientCAs = c.pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

var serial atomic.Int64

func selfSigned(t testing.TB, name string) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (c *CA) issue(t testing.TB, name string, tmpl, ca *x509.Certificate, caKey *rsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = nextSerial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	// PKCS#1: every server under test reads it.
	return c.write(t, name+".pem", "CERTIFICATE", der), c.write(t, name+"-key.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
}

func newKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func nextSerial() *big.Int {
	return big.NewInt(time.Now().UnixNano() + serial.Add(1))
}

func (c *CA) write(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(c.Dir, name)
	// Readable by other users: a server under test may run as another one.
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

package natsbus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	srv  *server.Server
	cfg  EmbeddedConfig
	opts []nats.Option // the credentials of this process's own connections
}

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	// Dir keeps the JetStream data.
	Dir string
	// Listen, if set, is a host:port the server also listens on for other
	// clients; empty: no network port at all (reached only through
	// Connect).
	Listen string
	// SyncAlways fsyncs every stream write (survives power loss, slower).
	SyncAlways bool
	// Credentials every client must present when the server listens: a
	// user and password, or a token (not both). Connect uses them.
	User, Password, Token string
	// TLS is the server's TLS configuration (its certificate; ClientCAs
	// with ClientAuth RequireAndVerifyClientCert for mutual TLS). Required
	// when the server listens.
	TLS *tls.Config
	// InsecureLoopback lets the server listen on a loopback address
	// without credentials and TLS. For tests and local tools only.
	InsecureLoopback bool
}

// StartEmbedded starts an in-process server keeping JetStream data in dir
// that listens on no port (listen must be empty: a listening server needs
// credentials and TLS, see StartEmbeddedServer).
func StartEmbedded(dir, listen string, syncAlways bool) (*Embedded, error) {
	return StartEmbeddedServer(EmbeddedConfig{Dir: dir, Listen: listen, SyncAlways: syncAlways})
}

// CheckListen refuses a listening server that anyone could use: it needs
// credentials and TLS, or the insecure override on a loopback address.
func (c EmbeddedConfig) CheckListen() error {
	if c.Listen == "" {
		return nil
	}
	if c.Token != "" && (c.User != "" || c.Password != "") {
		return errors.New("embedded nats: set a user and password or a token, not both")
	}
	if c.User != "" && c.Password == "" {
		return errors.New("embedded nats: a user needs a password")
	}
	secured := (c.User != "" || c.Token != "") && c.TLS != nil
	if secured {
		return nil
	}
	if c.InsecureLoopback {
		host, _, err := net.SplitHostPort(c.Listen)
		if ip := net.ParseIP(host); err == nil && (host == "localhost" || ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("embedded nats: the insecure override allows loopback addresses only, not %q", c.Listen)
	}
	return fmt.Errorf("embedded nats: refusing to listen on %s without credentials (nats.user and nats.password, or nats.token) and TLS (nats.listen_tls.cert_file and key_file)", c.Listen)
}

// StartEmbeddedServer starts an in-process NATS server with JetStream.
//
// JetStream writes each message to its file before acknowledging it, so an
// acknowledged event survives a kill -9 of the process (the operating
// system holds the write); it is fsynced every few minutes, so surviving a
// power loss needs SyncAlways (slower).
func StartEmbeddedServer(cfg EmbeddedConfig) (*Embedded, error) {
	if err := cfg.CheckListen(); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "spike-embedded",
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
		DontListen: cfg.Listen == "",
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
		}
	}
	var own []nats.Option
	switch {
	case cfg.Token != "":
		opts.Authorization = cfg.Token
		own = append(own, nats.Token(cfg.Token))
	case cfg.User != "":
		opts.Username, opts.Password = cfg.User, cfg.Password
		own = append(own, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLS = true
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 5
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("start embedded nats: not ready after 30s")
	}
	return &Embedded{srv: srv, cfg: cfg, opts: own}, nil
}

// Connect opens an in-process client connection to the server, with the
// server's credentials.
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.InProcessServer(e.srv), nats.Name(name), nats.ReconnectBufSize(-1)}, e.opts...)
	return nats.Connect("", opts...)
}

// ClientURL returns the URL clients reach the server on, or "" when it
// does not listen.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Shutdown stops the server and waits until it has stopped.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

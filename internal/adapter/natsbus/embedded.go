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
	"github.com/nats-io/nkeys"
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
	// user and password, a token, or the nkey whose seed is NkeySeed (one
	// of the three). Connect uses them. A user or an nkey gets
	// InstancePermissions; a token cannot carry permissions in NATS and
	// may do anything.
	User, Password, Token string
	// NkeySeed is the seed ("SU…") of this process's nkey: the listening
	// server accepts its public key, and Connect signs with it.
	NkeySeed []byte
	// Monitor, if set, is a further user of the listening server with
	// MonitorPermissions (read-only).
	Monitor *MonitorUser
	// TLS is the server's TLS configuration (its certificate; ClientCAs
	// with ClientAuth RequireAndVerifyClientCert for mutual TLS). Required
	// when the server listens.
	TLS *tls.Config
	// InsecureLoopback lets the server listen on a loopback address
	// without credentials and TLS. For tests and local tools only.
	InsecureLoopback bool
}

// MonitorUser is a read-only user of the listening embedded server: a user
// and password, or the public key of an nkey ("U…"), not both.
type MonitorUser struct {
	User, Password string
	Nkey           string
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
	if len(c.NkeySeed) > 0 {
		if c.User != "" || c.Token != "" {
			return errors.New("embedded nats: set a user and password, a token or an nkey seed, only one")
		}
		if _, err := nkeyUser(c.NkeySeed); err != nil {
			return err
		}
	}
	if err := c.checkMonitor(); err != nil {
		return err
	}
	secured := (c.User != "" || c.Token != "" || len(c.NkeySeed) > 0) && c.TLS != nil
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
	return fmt.Errorf("embedded nats: refusing to listen on %s without credentials (nats.user and nats.password, nats.token, or nats.nkey_seed_file) and TLS (nats.listen_tls.cert_file and key_file)", c.Listen)
}

// checkMonitor refuses a monitor user the server cannot tell apart from
// the instance.
func (c EmbeddedConfig) checkMonitor() error {
	m := c.Monitor
	if m == nil {
		return nil
	}
	switch {
	case (m.User != "") == (m.Nkey != ""):
		return errors.New("embedded nats: the monitor needs a user and password or an nkey public key, only one")
	case m.User != "" && m.Password == "":
		return errors.New("embedded nats: the monitor user needs a password")
	case m.Nkey != "" && !nkeys.IsValidPublicUserKey(m.Nkey):
		return errors.New("embedded nats: the monitor nkey is not a user public key (U…, 56 characters; never a seed)")
	case c.Token != "":
		return errors.New("embedded nats: a monitor needs the instance to be a user (user and password, or an nkey), not a token: a token carries no permissions")
	case m.User != "" && m.User == c.User:
		return errors.New("embedded nats: the monitor user must differ from the instance's")
	}
	if len(c.NkeySeed) > 0 && m.Nkey != "" {
		if kp, err := nkeyUser(c.NkeySeed); err == nil {
			if pub, _ := kp.PublicKey(); pub == m.Nkey {
				return errors.New("embedded nats: the monitor nkey must differ from the instance's")
			}
		}
	}
	return nil
}

// nkeyUser decodes the seed of a user nkey.
func nkeyUser(seed []byte) (nkeys.KeyPair, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: nkey seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, errors.New("embedded nats: the nkey seed is not a user seed (SU…)")
	}
	return kp, nil
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
	own, err := cfg.authorize(opts)
	if err != nil {
		return nil, err
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

// authorize sets the server's users and permissions in opts and returns
// the options of this process's own connections. Without a listener
// nobody else can connect, and nothing is required.
func (cfg EmbeddedConfig) authorize(opts *server.Options) ([]nats.Option, error) {
	var own []nats.Option
	switch {
	case cfg.Token != "":
		opts.Authorization = cfg.Token
		own = append(own, nats.Token(cfg.Token))
	case cfg.User != "":
		opts.Users = append(opts.Users, &server.User{Username: cfg.User, Password: cfg.Password, Permissions: InstancePermissions()})
		own = append(own, nats.UserInfo(cfg.User, cfg.Password))
	case len(cfg.NkeySeed) > 0:
		kp, err := nkeyUser(cfg.NkeySeed)
		if err != nil {
			return nil, err
		}
		pub, _ := kp.PublicKey()
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: pub, Permissions: InstancePermissions()})
		own = append(own, nats.Nkey(pub, kp.Sign))
	}
	if m := cfg.Monitor; m != nil {
		if m.Nkey != "" {
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: m.Nkey, Permissions: MonitorPermissions()})
		} else {
			opts.Users = append(opts.Users, &server.User{Username: m.User, Password: m.Password, Permissions: MonitorPermissions()})
		}
	}
	return own, nil
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

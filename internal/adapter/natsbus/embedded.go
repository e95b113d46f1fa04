package natsbus

import (
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
	srv *server.Server
}

// StartEmbedded starts an in-process NATS server that keeps JetStream data
// in dir. With listen empty it opens no network port at all and is reached
// only through Connect; otherwise it also listens on listen (host:port).
//
// JetStream writes each message to its file before acknowledging it, so an
// acknowledged event survives a kill -9 of the process (the operating
// system holds the write); it is fsynced every few minutes, so surviving a
// power loss needs syncAlways (slower).
func StartEmbedded(dir, listen string, syncAlways bool) (*Embedded, error) {
	opts := &server.Options{
		ServerName: "spike-embedded",
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: syncAlways,
		NoSigs:     true,
		NoLog:      true,
		DontListen: listen == "",
	}
	if listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
		}
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
	return &Embedded{srv: srv}, nil
}

// Connect opens an in-process client connection to the server.
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(e.srv), nats.Name(name), nats.ReconnectBufSize(-1))
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

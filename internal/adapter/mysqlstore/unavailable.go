package mysqlstore

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"

	"github.com/go-sql-driver/mysql"

	"github.com/spikehq/spike"
)

// ErrUnavailable is what a call answers (wrapping the cause) when its
// database could not be reached: the API's 503 + Retry-After, not a 500.
var ErrUnavailable = &spike.Error{Kind: spike.ErrUnavailable, Message: "the order database is unavailable; retry shortly"}

// unreachable is a database failure that is both ErrUnavailable and its
// cause.
type unreachable struct{ err error }

func (e *unreachable) Error() string   { return e.err.Error() }
func (e *unreachable) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// lost marks err as ErrUnavailable when it says the database could not be
// reached: a connection refused or reset, closed under a query (the
// driver's "invalid connection"), or a server shutting down. Any other
// error is returned as it is.
func lost(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	var ne net.Error
	var me *mysql.MySQLError
	switch {
	case errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne):
	case errors.As(err, &me) && (me.Number == 1053 || me.Number == 1927): // server shutdown, connection killed
	default:
		return err
	}
	return &unreachable{err: err}
}

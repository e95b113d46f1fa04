package natsbus

import (
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Who may do what on a listening embedded server (docs/security.md,
// "NATS users and permissions"). nats-server checks every PUB and SUB of a
// user against its permissions; a JetStream operation is a request
// published on $JS.API.<operation>.<stream>…, so allowing only the
// operations and streams Spike uses keeps a holder of the instance's
// credentials from purging or deleting a stream, and a monitor from
// changing anything at all.

// SaleInvalidateSubject is the core NATS subject of sale record cache
// invalidations (the message body is the sale id).
const SaleInvalidateSubject = "spike.sales.invalidate"

// Names Spike's permissions are written for: the defaults of Config,
// EventsConfig and the switch bucket.
var (
	parkedStreamName = StreamName + "_PARKED"
	switchStreamName = "KV_" + SwitchBucket
	spikeStreams     = []string{StreamName, parkedStreamName, EventsStreamName, switchStreamName}
	// Core NATS subjects instances publish and subscribe to.
	coreSubjects = []string{InvalidateSubject, SaleInvalidateSubject, PersistedSubject, LookupSubject + ".*"}
)

// InstancePermissions are the permissions of a Spike instance's NATS user:
// exactly the subjects and JetStream operations Spike uses, on its own
// streams (ORDERS, ORDERS_PARKED, ORDER_EVENTS and the switch bucket).
// Purging or deleting a stream, and every other stream, are refused.
func InstancePermissions() *server.Permissions {
	pub := []string{
		PlacedSubject + ".>",
		EventsSubject + ".>",
		"spike.parked." + parkedStreamName + ".>",
		"$KV." + SwitchBucket + ".>",
		"$JS.API.INFO",
	}
	pub = append(pub, coreSubjects...)
	for _, s := range spikeStreams {
		pub = append(pub,
			"$JS.API.STREAM.CREATE."+s,
			"$JS.API.STREAM.UPDATE."+s,
			"$JS.API.STREAM.INFO."+s,
		)
	}
	pub = append(pub,
		// The order workers: their durable consumer, pulls and acks;
		// lookups by order id and the rebuild's reads (the stream does
		// not allow direct gets); the orphan sweep's deletes.
		"$JS.API.CONSUMER.CREATE."+StreamName+".>",
		"$JS.API.CONSUMER.INFO."+StreamName+".>",
		"$JS.API.CONSUMER.MSG.NEXT."+StreamName+".>",
		"$JS.ACK."+StreamName+".>",
		"$JS.API.STREAM.MSG.GET."+StreamName,
		"$JS.API.STREAM.MSG.DELETE."+StreamName,
		// The switch bucket: reads (direct gets), and the ordered
		// consumers behind its watch and key listing (created,
		// flow-controlled, deleted).
		"$JS.API.DIRECT.GET."+switchStreamName+".>",
		"$JS.API.CONSUMER.CREATE."+switchStreamName+".>",
		"$JS.API.CONSUMER.DELETE."+switchStreamName+".>",
		"$JS.FC."+switchStreamName+".>",
	)
	sub := append([]string{"_INBOX.>"}, coreSubjects...)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
		// Answers to other instances' order lookups (lookup.go): one reply
		// per request received, to whatever inbox it names.
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
	}
}

// MonitorPermissions are the permissions of the optional read-only
// monitor user: it may watch Spike's subjects (placements, lifecycle
// events, parked events, invalidations, switch changes) and read the
// state of streams and consumers and the messages of Spike's streams; it
// may publish nothing else, so it cannot place or forge an order, flip a
// switch, create, purge or delete anything, or acknowledge a message.
func MonitorPermissions() *server.Permissions {
	pub := []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.INFO.*",
		"$JS.API.CONSUMER.NAMES.*",
		"$JS.API.CONSUMER.LIST.*",
		"$JS.API.CONSUMER.INFO.*.*",
	}
	for _, s := range spikeStreams {
		pub = append(pub, "$JS.API.STREAM.MSG.GET."+s, "$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>")
	}
	sub := []string{
		"_INBOX.>", // the answers to its requests
		PlacedSubject + ".>",
		EventsSubject + ".>",
		"spike.parked.>",
		"$KV." + SwitchBucket + ".>",
	}
	sub = append(sub, coreSubjects...)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

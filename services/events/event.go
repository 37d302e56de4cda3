package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Kind is what an event says happened.
type Kind string

// Kinds of events.
const (
	// PhaseStarted, PhaseDone and PhaseFailed: a boot phase of init
	// (Name), with its duration (Millis) once done; Error says why it
	// failed.
	PhaseStarted Kind = "phase.started"
	PhaseDone    Kind = "phase.done"
	PhaseFailed  Kind = "phase.failed"
	// RunLevelReached: init reached the cluster's run level (Level) at
	// Millis since the kernel started.
	RunLevelReached Kind = "runlevel.reached"
	// StateChanged: this node's state (State) as init records it
	// (ComingUp, Up, ShuttingDown, Failed).
	StateChanged Kind = "state.changed"
	// TransitionApplied: the membership applied transition Transition:
	// node Subject is now State (Master committed it, for Detail).
	TransitionApplied Kind = "transition.applied"
	// RoleTaken and RoleLost: this node took or lost a role (Name:
	// RoleMaster, RoleCFSServer).
	RoleTaken Kind = "role.taken"
	RoleLost  Kind = "role.lost"
	// ServiceStarted and ServiceStopped: a service of this node (Name)
	// started or stopped; Level is its run level for run-level services;
	// an HA service's instance says which in Attrs (AttrInstance,
	// AttrGen, AttrPID).
	ServiceStarted Kind = "service.started"
	ServiceStopped Kind = "service.stopped"
	// Fenced: this node (the master) fenced node Subject; Error is set if
	// the agent failed.
	Fenced Kind = "node.fenced"
	// RootUnmounted: the shared root's partition was unmounted at
	// shutdown; Attrs[AttrClean] says whether it was left clean.
	RootUnmounted Kind = "root.unmounted"
	// LockspaceStarted: the kernel DLM's lockspace Name runs on this
	// node at epoch Detail with the members Attrs[AttrMembers] (after a
	// join, a recovery or a leave).
	LockspaceStarted Kind = "lockspace.started"
)

// Kinds lists every kind, for validation and help.
func Kinds() []Kind {
	return []Kind{PhaseStarted, PhaseDone, PhaseFailed, RunLevelReached, StateChanged, TransitionApplied,
		RoleTaken, RoleLost, ServiceStarted, ServiceStopped, Fenced, RootUnmounted, LockspaceStarted}
}

// Role names.
const (
	RoleMaster    = "master"
	RoleCFSServer = "cfs-server"
)

// Service names of the daemon's own services.
const (
	ServiceMembership = "membership"
	ServiceCFS        = "cfs"
	ServiceCFSRelay   = "cfs-relay"
	ServiceLocusd     = "locusd"
	// ServiceDLM: the kernel DLM's control daemon.
	ServiceDLM = "dlm"
)

// Attribute keys.
const (
	// AttrTLS: "true" when membership runs over mutual TLS with a sealed
	// gossip.
	AttrTLS = "tls"
	// AttrClean: "true" when a filesystem was left clean.
	AttrClean = "clean"
	// AttrMembers: a lockspace's member nodes, comma separated, ascending.
	AttrMembers = "members"
	// AttrInstance, AttrGen and AttrPID: which instance of an HA service
	// started or stopped, the generation of its placement, its process.
	AttrInstance = "instance"
	AttrGen      = "gen"
	AttrPID      = "pid"
)

// Sources of events.
const (
	SourceInit   = "init"
	SourceLocusd = "locusd"
)

// Event is one record of the feed.
type Event struct {
	// Seq numbers the node's events from 1, in the order published.
	Seq uint64    `json:"seq"`
	At  time.Time `json:"at"`
	// Node is the node that published it (0 before init knows its
	// number).
	Node   int    `json:"node,omitempty"`
	Source string `json:"source"`
	Kind   Kind   `json:"kind"`
	// Name is the phase, role or service.
	Name  string `json:"name,omitempty"`
	State string `json:"state,omitempty"`
	Level int    `json:"level,omitempty"`
	// Subject is the node a transition or fencing is about.
	Subject    int               `json:"subject,omitempty"`
	Transition uint64            `json:"transition,omitempty"`
	Master     int               `json:"master,omitempty"`
	Millis     int64             `json:"ms,omitempty"`
	Detail     string            `json:"detail,omitempty"`
	Error      string            `json:"error,omitempty"`
	Attrs      map[string]string `json:"attrs,omitempty"`
}

// String is the event as one line for people.
func (e Event) String() string {
	node := "-" // init does not know its number before the network phase
	if e.Node > 0 {
		node = strconv.Itoa(e.Node)
	}
	s := fmt.Sprintf("%s #%d node %s %s: %s", e.At.Local().Format("15:04:05.000"), e.Seq, node, e.Source, e.Kind)
	if e.Name != "" {
		s += " " + e.Name
	}
	detail := e.Detail
	if e.Kind == TransitionApplied {
		s += fmt.Sprintf(" %d: node %d %s (master %d", e.Transition, e.Subject, e.State, e.Master)
		if detail != "" {
			s += ": " + detail
		}
		s += ")"
		detail = ""
	} else {
		if e.Subject != 0 {
			s += fmt.Sprintf(" node %d", e.Subject)
		}
		if e.State != "" {
			s += " " + e.State
		}
	}
	if e.Level != 0 {
		s += fmt.Sprintf(" level %d", e.Level)
	}
	switch {
	case e.Kind == RunLevelReached:
		s += fmt.Sprintf(", %.1fs after the kernel started", float64(e.Millis)/1000)
	case e.Millis != 0:
		s += fmt.Sprintf(" in %dms", e.Millis)
	}
	for _, k := range []string{AttrTLS, AttrClean, AttrMembers, AttrInstance, AttrGen, AttrPID} {
		if v, ok := e.Attrs[k]; ok {
			s += " " + k + "=" + v
		}
	}
	if detail != "" {
		s += " (" + detail + ")"
	}
	if e.Error != "" {
		s += ": " + e.Error
	}
	return s
}

// Limits on an encoded event.
const (
	MaxLine  = 16 << 10
	maxAttrs = 16
)

// ErrBadEvent is returned (wrapped) for a line that is not a valid event.
var ErrBadEvent = errors.New("events: bad event")

// Decode parses and checks one encoded event (one line, without or with
// its newline). Unknown fields are ignored, so an older reader follows a
// newer node; an unknown kind is an error.
func Decode(line []byte) (Event, error) {
	var e Event
	if len(line) > MaxLine {
		return e, fmt.Errorf("%w: %d bytes, at most %d", ErrBadEvent, len(line), MaxLine)
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if err := e.check(); err != nil {
		return Event{}, err
	}
	return e, nil
}

func (e Event) check() error {
	known := false
	for _, k := range Kinds() {
		known = known || e.Kind == k
	}
	switch {
	case !known:
		return fmt.Errorf("%w: seq %d: unknown kind %q", ErrBadEvent, e.Seq, e.Kind)
	case e.Node < 0 || e.Subject < 0 || e.Level < 0:
		return fmt.Errorf("%w: seq %d: negative node, subject or level", ErrBadEvent, e.Seq)
	case len(e.Attrs) > maxAttrs:
		return fmt.Errorf("%w: seq %d: %d attributes, at most %d", ErrBadEvent, e.Seq, len(e.Attrs), maxAttrs)
	}
	return nil
}

// Write encodes e as one line on w.
func Write(w io.Writer, e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

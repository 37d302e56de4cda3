// Package proc is Locus's clusterwide process space (openSSI's vproc,
// rexec and clusterwide kill; bproc's single process space), without a
// patched kernel.
//
// Every process of every node has a cluster PID, node<<22 | pid (CPID):
// the kernel's pid_max is at most 4,194,304 (1<<22), so a local PID fits
// the low 22 bits and 511 nodes fit an int32, which procps takes. A CPID
// is virtual and says so: it names where a process runs, and processes
// keep their local PIDs.
//
// A job is a command run on another node (onnode, onall, fast). Its
// client is the local stand-in: a process on the caller's node that
// relays stdin, stdout, stderr, window size and catchable signals, and
// ends as the remote process ended (its exit code, or its signal raised
// on itself), so the shell's wait, $! and kill %1 work on it as on a
// local child. The remote side runs the command in its own session; when
// the stand-in goes away, the job's session gets SIGHUP, then SIGKILL
// after a grace period, so nothing is orphaned. When the job's node goes
// Down the stand-in exits 255 at once.
//
// The stream between stand-in and node daemon, and between daemons over
// ICS, is a sequence of frames (Frame): Start, Stdin, StdinClose, Resize
// and Signal from the stand-in; Started, Stdout, Stderr and Exit back.
//
// Every node samples its load (run queue, CPUs, speed, free memory) once
// a second, damped as Kerrighed's and MOSIX's schedulers damp it (the
// local mean rises slowly and drops at once; the upper value used for
// remote nodes rises at once and decays slowly), and gossips it to one
// random peer every 500 ms. fast places a job on the least loaded node,
// counting the jobs it placed in the last seconds as load, so that a
// burst of launches spreads instead of herding.
package proc

// Commands are openSSI's process commands, which the image links to
// locus, and the locus verb each one is.
func Commands() map[string]string {
	return map[string]string{"onnode": "onnode", "onall": "onall", "fast": "fast", "fastnode": "fastnode",
		"where_pid": "where", "loads": "loads", "kill3": "kill3"}
}

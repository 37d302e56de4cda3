// Package standin is the caller's side of a clusterwide job: the frames
// of a job's stream (Frame: Start, Stdin, StdinClose, Resize and Signal
// from the stand-in; Started, Stdout, Stderr and Exit back), and the
// stand-in itself (Attach), the local process that stands for a job
// running on another node and ends as it ended (Reraise).
//
// It is kept small and free of the daemon's dependencies: the image's
// onnode and fast (cmd/onnode) are built from it alone, so that a
// remote command costs little more than the process it runs.
package standin

/**
 * The Orbit daemon: one long-running JVM that owns the node's devices and runs the jobs dropped
 * into its jobs folder. {@link org.orbitrl.daemon.Main} is the process entry point;
 * {@link org.orbitrl.daemon.Daemon} is the daemon itself, which tests run in-process.
 */
package org.orbitrl.daemon;

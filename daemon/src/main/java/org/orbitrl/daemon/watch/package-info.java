/** Watching the jobs folder: file events, debounced, become job-file events. */
package org.orbitrl.daemon.watch;

/** systemd integration: readiness, status, stopping and watchdog notifications. */
package org.orbitrl.daemon.systemd;

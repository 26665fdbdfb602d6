/**
 * JMX: MXBeans with open types only (strings, numbers, arrays, {@code CompositeData} and
 * {@code TabularData} through the MXBean mapping), so any JMX client reads them without Orbit's
 * classes.
 *
 * <ul>
 * <li>{@code org.orbitrl:type=Daemon}: version, uptime, devices, jobs; notifications for every
 *     job's state changes, failures, invalid job files and refused changes.</li>
 * <li>{@code org.orbitrl:type=Job,name=NAME}: state and measurements; pause, resume, stop,
 *     checkpointNow and the live-tunable fields, each validated.</li>
 * <li>{@code org.orbitrl:type=Memory,device="cuda:0"}: bytes by category, live, peak and planned.</li>
 * </ul>
 *
 * Remote JMX is off by default; {@link org.orbitrl.daemon.jmx.RemoteJmx} opens it with password
 * and access files and optional TLS.
 */
package org.orbitrl.daemon.jmx;

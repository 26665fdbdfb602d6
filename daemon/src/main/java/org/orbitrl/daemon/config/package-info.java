/**
 * The daemon's configuration file, {@code orbit.yaml}: read strictly (unknown keys, wrong types
 * and missing units are all reported at once with line numbers), validated in the records'
 * constructors. {@code conf/orbit.yaml} shows every key with its default.
 */
package org.orbitrl.daemon.config;

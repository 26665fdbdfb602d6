/**
 * Strict YAML configuration reading shared by job files and the daemon's {@code orbit.yaml}:
 * a YAML tree that remembers the line and column of every key and value
 * ({@link org.orbitrl.scheduler.job.yaml.YamlNode}), a section reader that reads typed values
 * with defaults and units and reports unknown keys ({@link org.orbitrl.scheduler.job.yaml.Section}),
 * and the problem list that names file, line, column, key and what was expected
 * ({@link org.orbitrl.scheduler.job.yaml.ConfigException}).
 *
 * <p>Reading never stops at the first problem: every problem of a file is collected and
 * reported at once.
 */
package org.orbitrl.scheduler.job.yaml;

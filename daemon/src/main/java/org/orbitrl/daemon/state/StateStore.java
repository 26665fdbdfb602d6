package org.orbitrl.daemon.state;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import net.openhft.chronicle.map.ChronicleMap;
import net.openhft.chronicle.map.ChronicleMapBuilder;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The persisted job-state map. A marker file records a clean close; a map that was not closed
 * cleanly (the daemon was killed) is opened through Chronicle Map's recovery, which repairs
 * segment locks and counters left by a killed writer. Only one daemon opens a data directory at
 * a time (the daemon holds a lock on it), which recovery requires.
 *
 * <p>A kill can also land while Chronicle Map creates or recovers the file, which leaves its
 * header marked incomplete; Chronicle would then wait a minute for the dead process before it
 * recovers. The map file is therefore created under a temporary name and renamed once whole,
 * and a header left incomplete by a killed recovery is marked ready before recovering again
 * ({@link StateMapHeader}).
 */
public final class StateStore implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(StateStore.class);
    /** The map's file name in its folder. */
    static final String FILE = "jobs.cm3";
    private static final ObjectMapper JSON = new ObjectMapper()
            .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

    private final ChronicleMap<CharSequence, byte[]> map;
    private final Path cleanMarker;

    private StateStore(ChronicleMap<CharSequence, byte[]> map, Path cleanMarker) {
        this.map = map;
        this.cleanMarker = cleanMarker;
    }

    /**
     * Opens (creating) the map in {@code dir}. The caller must be the only process using
     * {@code dir} (recovery after a kill requires it).
     *
     * @param maxJobs entries the map is sized for
     */
    public static StateStore open(Path dir, int maxJobs) throws IOException {
        Files.createDirectories(dir);
        Path file = dir.resolve(FILE);
        Path marker = dir.resolve("clean-shutdown");
        ChronicleMapBuilder<CharSequence, byte[]> b = builder(maxJobs);
        Path partial = dir.resolve(FILE + ".new");
        if (Files.deleteIfExists(partial)) {
            LOG.warn("removed {}, a state map whose creation was interrupted", partial);
        }
        if (Files.exists(file) && StateMapHeader.readiness(file) == StateMapHeader.Readiness.EMPTY) {
            LOG.warn("the state map {} holds no map (its creation was interrupted); creating it again", file);
            Files.delete(file);
        }
        boolean created = !Files.exists(file);
        if (created) {
            b.createPersistedTo(partial.toFile()).close(); // a kill leaves only the temporary file
            Files.move(partial, file, StandardCopyOption.ATOMIC_MOVE);
        }
        ChronicleMap<CharSequence, byte[]> map;
        if (!created && !Files.exists(marker)) {
            LOG.warn("the state map {} was not closed cleanly (the daemon was killed); recovering it", file);
            if (StateMapHeader.markReadyIfIncomplete(file)) {
                LOG.warn("the state map {} was left marked incomplete by a daemon killed while creating or"
                        + " recovering it; marked ready for this recovery", file);
            }
            map = b.recoverPersistedTo(file.toFile(), true,
                    corruption -> LOG.warn("state map recovery: {}", corruption.message()));
        } else {
            map = b.createPersistedTo(file.toFile());
        }
        Files.deleteIfExists(marker); // absent while open: a crash leaves it absent
        return new StateStore(map, marker);
    }

    /** A map in memory only, for a daemon whose data directory cannot be written. */
    public static StateStore inMemory(int maxJobs) {
        return new StateStore(builder(maxJobs).create(), null);
    }

    /** The map's builder (tests open the file with it as a killed daemon would have). */
    static ChronicleMapBuilder<CharSequence, byte[]> builder(int maxJobs) {
        return ChronicleMap.of(CharSequence.class, byte[].class)
                .name("orbit-jobs")
                .entries(maxJobs)
                .averageKeySize(24)
                .averageValueSize(6 * 1024)
                .maxBloatFactor(4);
    }

    /** Whether records survive a restart. */
    public boolean persistent() {
        return cleanMarker != null;
    }

    public void put(JobRecord r) {
        try {
            map.put(r.name(), JSON.writeValueAsBytes(r));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot serialise the state of job " + r.name(), e);
        }
    }

    public Optional<JobRecord> get(String name) {
        byte[] b = map.get(name);
        return b == null ? Optional.empty() : Optional.ofNullable(decode(name, b));
    }

    public void remove(String name) {
        map.remove(name);
    }

    /** Every record that decodes; one that does not is logged and skipped. */
    public List<JobRecord> all() {
        List<JobRecord> out = new ArrayList<>();
        map.forEach((k, v) -> {
            JobRecord r = decode(k.toString(), v);
            if (r != null) {
                out.add(r);
            }
        });
        return out;
    }

    private static JobRecord decode(String name, byte[] b) {
        try {
            return JSON.readValue(b, JobRecord.class);
        } catch (IOException e) {
            LOG.error("the stored state of job {} cannot be read ({}); it is ignored", name, e.getMessage());
            return null;
        }
    }

    @Override
    public void close() throws IOException {
        map.close();
        if (cleanMarker != null) {
            Files.writeString(cleanMarker, "closed cleanly\n");
        }
    }
}

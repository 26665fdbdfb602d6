package org.orbitrl.scheduler.job.checkpoint;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import org.orbitrl.scheduler.job.JobException;

/**
 * A job's checkpoints in one folder: {@code ckpt-<step>.orbit}, newest {@code keep} kept.
 * Writing is atomic (temporary file, fsync, rename, fsync of the folder); {@link #latest()}
 * returns the newest checkpoint that passes every check, setting corrupt ones aside as
 * {@code *.corrupt} with a warning.
 */
public final class CheckpointStore {
    /** What a job writes into a checkpoint. */
    @FunctionalInterface
    public interface Content {
        void write(CheckpointWriter out) throws IOException, JobException;
    }

    /**
     * The result of looking for a checkpoint to resume from.
     *
     * @param checkpoint the newest valid checkpoint, or {@code null} if there is none
     * @param warnings   one line per checkpoint that was newer but failed its checks
     */
    public record Found(Checkpoint checkpoint, List<String> warnings) {
        public Found {
            warnings = List.copyOf(warnings);
        }
    }

    private static final String TMP_PREFIX = ".ckpt-";
    private static final String TMP_SUFFIX = ".tmp";

    private final Path dir;
    private final int keep;

    /**
     * Opens (creating) the folder and deletes temporary files a crash left behind.
     *
     * @param keep newest checkpoints kept, at least 1
     */
    public CheckpointStore(Path dir, int keep) throws IOException {
        if (keep < 1) {
            throw new IllegalArgumentException("keep must be at least 1, got " + keep);
        }
        this.dir = dir;
        this.keep = keep;
        Files.createDirectories(dir);
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, TMP_PREFIX + "*" + TMP_SUFFIX)) {
            for (Path p : ds) {
                Files.deleteIfExists(p);
            }
        }
    }

    /** The folder. */
    public Path dir() {
        return dir;
    }

    /**
     * Writes the checkpoint of {@code step} atomically and prunes older ones. On any failure
     * (a full disk, a read-only folder) the temporary file is removed, the previous checkpoints
     * are untouched, and the error names the file and the cause.
     */
    public Checkpoint write(long step, Content content) throws IOException, JobException {
        if (step < 0) {
            throw new IllegalArgumentException("step must not be negative: " + step);
        }
        Path target = dir.resolve(CheckpointFormat.fileName(step));
        Path tmp = dir.resolve(TMP_PREFIX + step + "-" + ProcessHandle.current().pid() + "-" + System.nanoTime() + TMP_SUFFIX);
        try {
            try (CheckpointFileWriter w = new CheckpointFileWriter(tmp, step)) {
                content.write(w);
                w.finish();
            }
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("the file system of " + dir + " cannot rename atomically; checkpoints need it", e);
            }
            forceDirectory();
        } catch (IOException | JobException | RuntimeException e) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException cleanup) {
                e.addSuppressed(cleanup);
            }
            if (e instanceof IOException io) {
                throw new IOException("cannot write checkpoint " + target + ": " + describe(io), io);
            }
            throw e;
        }
        prune();
        return Checkpoint.open(target, false);
    }

    /**
     * The newest checkpoint that passes every check; newer ones that fail are set aside with a warning. Where every
     * one fails, a last warning says that the job starts from step 0.
     */
    public Found latest() throws IOException {
        List<String> warnings = new ArrayList<>();
        List<Path> files = list();
        for (int i = 0; i < files.size(); i++) {
            Path p = files.get(i);
            try {
                Checkpoint cp = Checkpoint.open(p, true);
                if (cp.step() != CheckpointFormat.stepOf(p.getFileName().toString())) {
                    throw new CheckpointCorruptException(p, "holds step " + cp.step() + " under another step's name");
                }
                return new Found(cp, warnings);
            } catch (IOException e) {
                String aside = setAside(p);
                warnings.add(e.getMessage() + "; " + aside + (i + 1 < files.size() ? "; trying the previous checkpoint" : ""));
            }
        }
        if (!warnings.isEmpty()) {
            warnings.add("no checkpoint in " + dir + " passes its checks (" + warnings.size() + " set aside): the job starts"
                    + " from step 0, with a new adapter");
        }
        return new Found(null, warnings);
    }

    /** Checkpoint files, newest first (not checked). */
    public List<Path> list() throws IOException {
        List<Path> out = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "ckpt-*.orbit")) {
            for (Path p : ds) {
                if (CheckpointFormat.stepOf(p.getFileName().toString()) >= 0) {
                    out.add(p);
                }
            }
        }
        out.sort(Comparator.comparingLong((Path p) -> CheckpointFormat.stepOf(p.getFileName().toString())).reversed());
        return out;
    }

    private void prune() throws IOException {
        List<Path> all = list();
        for (int i = keep; i < all.size(); i++) {
            Files.deleteIfExists(all.get(i));
        }
    }

    private String setAside(Path p) {
        Path aside = p.resolveSibling(p.getFileName() + ".corrupt");
        try {
            Files.move(p, aside, StandardCopyOption.REPLACE_EXISTING);
            return "kept as " + aside.getFileName();
        } catch (IOException e) {
            return "could not set it aside (" + describe(e) + ")";
        }
    }

    private void forceDirectory() throws IOException {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true); // the rename itself reaches the disk
        }
    }

    /** An I/O error as a person reads it: the OS reason, not just the path. */
    static String describe(IOException e) {
        if (e instanceof java.nio.file.FileSystemException fse && fse.getReason() != null) {
            return fse.getReason();
        }
        return e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
    }
}

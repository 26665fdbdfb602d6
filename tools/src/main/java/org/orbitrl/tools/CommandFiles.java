package org.orbitrl.tools;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.FileSystemLoopException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.nio.file.NotLinkException;
import java.nio.file.Path;
import java.util.Locale;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.yaml.ConfigException;

/**
 * Files named on the command line: a job file read with every way it can be wrong said in words, and
 * {@code java.nio} file exceptions as a person reads them ({@code /tmp/x.yaml: no such file}); their own message is
 * often the bare path.
 */
final class CommandFiles {
    private CommandFiles() {
    }

    /**
     * Reads and validates a job file.
     *
     * @throws IllegalArgumentException naming the file and what is wrong: missing, a directory, not readable, or the
     *                                  problems of its content
     */
    static JobSpec readJob(Path file) {
        Path abs = file.toAbsolutePath();
        if (Files.isDirectory(abs)) {
            throw new IllegalArgumentException("job file " + abs + ": is a directory, expected a job file (.yaml)");
        }
        try {
            return JobFiles.read(abs);
        } catch (IOException e) {
            throw new IllegalArgumentException("job file " + describe(e, abs), e);
        } catch (ConfigException e) {
            throw new IllegalArgumentException(e.getMessage(), e);   // names the file, each problem with its key
        }
    }

    /** What went wrong with a file, or {@code null} when the throwable is not about one. */
    static String describe(Throwable t) {
        if (t instanceof UncheckedIOException u) {
            t = u.getCause();
        }
        return t instanceof FileSystemException f ? describe(f, null) : null;
    }

    /**
     * {@code PATH: REASON}: the exception's file (else {@code path}) and what is wrong with it, in lower case words.
     */
    static String describe(IOException e, Path path) {
        if (!(e instanceof FileSystemException f)) {
            return path + ": " + lowerFirst(String.valueOf(e.getMessage()));
        }
        String reason = switch (f) {
            case NoSuchFileException _ -> "no such file";
            case AccessDeniedException _ -> "permission denied";
            case NotDirectoryException _ -> "not a directory";
            case FileAlreadyExistsException _ -> "already exists";
            case DirectoryNotEmptyException _ -> "directory not empty";
            case NotLinkException _ -> "not a symbolic link";
            case FileSystemLoopException _ -> "symbolic links form a loop";
            default -> f.getReason() == null ? "cannot be used" : lowerFirst(f.getReason());
        };
        String file = f.getFile() != null ? f.getFile() : String.valueOf(path);
        return file + (f.getOtherFile() == null ? "" : " -> " + f.getOtherFile()) + ": " + reason;
    }

    private static String lowerFirst(String s) {
        return s.isEmpty() || s.length() > 1 && Character.isUpperCase(s.charAt(1)) ? s
                : s.substring(0, 1).toLowerCase(Locale.ROOT) + s.substring(1);
    }
}

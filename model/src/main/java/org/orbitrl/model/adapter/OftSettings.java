package org.orbitrl.model.adapter;

/**
 * The OFT options of a PEFT {@code OFTConfig} (peft 0.21), under their JSON keys.
 *
 * <p>Exactly one of {@code r} (blocks per layer) and {@code oft_block_size} is non-zero; the other
 * is inferred per layer from its input width, and a value that does not divide the width is moved
 * to the nearest divisor as PEFT's {@code adjust_oft_parameters} does (see {@link #layout}).
 *
 * @param r             {@code r}: number of diagonal blocks per layer, or 0
 * @param blockSize     {@code oft_block_size}: the size of each block, or 0
 * @param coft          {@code coft}: before every forward, each block's skew matrix is projected
 *                      onto the Frobenius ball of radius {@code eps/sqrt(stored blocks)}
 * @param eps           {@code eps}: the coft radius
 * @param blockShare    {@code block_share}: one block's parameters shared by all blocks of a layer
 * @param cayleyNeumann {@code use_cayley_neumann}: a truncated Neumann series instead of the exact Cayley map
 * @param neumannTerms  {@code num_cayley_neumann_terms}
 */
public record OftSettings(int r, int blockSize, boolean coft, double eps, boolean blockShare, boolean cayleyNeumann,
                          int neumannTerms) {

    public OftSettings {
        if (r < 0 || blockSize < 0 || (r == 0) == (blockSize == 0)) {
            throw new IllegalArgumentException("OFT needs exactly one of r (" + r + ") and oft_block_size ("
                    + blockSize + ") to be positive, because r × oft_block_size = in_features");
        }
        if (cayleyNeumann && neumannTerms < 2) {
            throw new IllegalArgumentException("num_cayley_neumann_terms must be at least 2, got " + neumannTerms
                    + " (with fewer terms every rotation is the identity and nothing trains)");
        }
        if (coft && !(eps > 0)) {
            throw new IllegalArgumentException("coft needs a positive eps, got " + eps);
        }
    }

    /** PEFT's defaults for a given block size: Cayley-Neumann with 5 terms, no coft (eps 6e-5), no block sharing. */
    public static OftSettings ofBlockSize(int blockSize) {
        return new OftSettings(0, blockSize, false, 6e-5, false, true, 5);
    }

    /**
     * How a layer of input width {@code in} is split.
     *
     * @param blocks       diagonal blocks of the rotation (in = blocks · blockSize)
     * @param blockSize    rows and columns of each block
     * @param storedBlocks blocks with their own parameters: 1 with block_share, else {@code blocks}
     */
    public record Layout(int blocks, int blockSize, int storedBlocks) {
        /** Parameters per stored block: the strict upper triangle of a skew-symmetric matrix. */
        public int elements() {
            return blockSize * (blockSize - 1) / 2;
        }
    }

    /** The split PEFT makes for a layer of input width {@code in}. */
    public Layout layout(int in) {
        int blocks;
        int size;
        if (r == 0) {
            size = blockSize;
            if (in % size != 0 || size > in) {
                size = adjust(in, size);
            }
            blocks = in / size;
        } else {
            blocks = r;
            if (in % blocks != 0 || blocks > in) {
                blocks = adjust(in, blocks);
            }
            size = in / blocks;
        }
        if (size < 2) {
            throw new IllegalArgumentException("OFT block size " + size + " for a layer of width " + in
                    + " leaves no parameters (r=" + r + ", oft_block_size=" + blockSize + ")");
        }
        return new Layout(in / size, size, blockShare ? 1 : in / size);
    }

    /** PEFT's {@code adjust_oft_parameters}: the divisor of {@code in} nearest to {@code p}, the lower one on a tie. */
    static int adjust(int in, int p) {
        if (p >= in) {
            return in;
        }
        int higher = p;
        while (higher <= in && in % higher != 0) {
            higher++;
        }
        int lower = p;
        while (lower > 1 && in % lower != 0) {
            lower--;
        }
        return (p - lower) <= (higher - p) ? lower : higher;
    }
}

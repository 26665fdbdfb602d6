package org.orbitrl.model.tokenizer.internal;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The {@code BPE} model of a tokenizer.json: vocabulary, ranked merges, and the options
 * {@code ignore_merges}, {@code byte_fallback}, {@code unk_token}/{@code fuse_unk},
 * {@code continuing_subword_prefix} and {@code end_of_word_suffix}.
 *
 * <p>A word (one pre-tokenizer piece) starts as one symbol per character and is merged as
 * {@code tokenizers}' {@code Word::merge_all} does: a min-heap of candidate merges ordered by
 * (rank, position); a popped candidate whose pair has changed since it was pushed is dropped;
 * after each merge the new pairs with the left and right neighbours are pushed. Results are
 * cached per word, as words repeat a lot in text.
 *
 * <p>A character that is not in the vocabulary becomes its {@code <0xXX>} byte tokens when
 * {@code byte_fallback} is on and they exist, else the unknown token when there is one, else it is
 * dropped (all as in {@code tokenizers}; byte-level vocabularies contain every byte, so it does
 * not happen to them).
 */
public final class BpeModel {
    private static final int CACHE_MAX_ENTRIES = 200_000;
    private static final int CACHE_MAX_WORD_CHARS = 256;

    private final Map<String, Integer> vocab;
    private final String[] idToToken;
    /** merge pair (left id, right id) -> rank; rank -> id of the merged token. */
    private final PairRankMap pairRanks;
    private final int[] mergedId;
    private final Integer unkId;
    private final boolean fuseUnk;
    private final boolean byteFallback;
    private final boolean ignoreMerges;
    private final String continuingSubwordPrefix;
    private final String endOfWordSuffix;
    /** id of each single-character token below U+0200 (the byte-level alphabet), -1 if absent. */
    private final int[] smallCharIds = new int[0x200];
    private final ConcurrentHashMap<String, int[]> cache = new ConcurrentHashMap<>();

    BpeModel(Map<String, Integer> vocab, List<String[]> merges, List<JsonNodeReader> mergeNodes, String unkToken,
             boolean fuseUnk, boolean byteFallback, boolean ignoreMerges, String continuingSubwordPrefix,
             String endOfWordSuffix, JsonNodeReader at) {
        this.vocab = vocab;
        int maxId = -1;
        for (int id : vocab.values()) {
            maxId = Math.max(maxId, id);
        }
        idToToken = new String[maxId + 1];
        for (Map.Entry<String, Integer> e : vocab.entrySet()) {
            if (idToToken[e.getValue()] != null) {
                throw at.error("vocab", "id " + e.getValue() + " is given to both '" + idToToken[e.getValue()] + "' and '"
                        + e.getKey() + "'");
            }
            idToToken[e.getValue()] = e.getKey();
        }
        this.continuingSubwordPrefix = continuingSubwordPrefix;
        this.endOfWordSuffix = endOfWordSuffix;
        pairRanks = new PairRankMap(merges.size());
        mergedId = new int[merges.size()];
        int prefixLen = continuingSubwordPrefix == null ? 0 : continuingSubwordPrefix.length();
        for (int rank = 0; rank < merges.size(); rank++) {
            String[] m = merges.get(rank);
            JsonNodeReader where = mergeNodes.get(rank);
            Integer a = vocab.get(m[0]);
            Integer b = vocab.get(m[1]);
            if (a == null || b == null) {
                throw where.error("merge token '" + (a == null ? m[0] : m[1]) + "' is not in model.vocab");
            }
            String right = prefixLen > 0 && m[1].startsWith(continuingSubwordPrefix) ? m[1].substring(prefixLen) : m[1];
            Integer merged = vocab.get(m[0] + right);
            if (merged == null) {
                throw where.error("merged token '" + m[0] + right + "' is not in model.vocab");
            }
            pairRanks.put(a, b, rank); // a repeated pair keeps its last rank, as in tokenizers
            mergedId[rank] = merged;
        }
        if (unkToken != null && !vocab.containsKey(unkToken)) {
            throw at.error("unk_token", "unknown token '" + unkToken + "' is not in model.vocab");
        }
        this.unkId = unkToken == null ? null : vocab.get(unkToken);
        this.fuseUnk = fuseUnk;
        this.byteFallback = byteFallback;
        this.ignoreMerges = ignoreMerges;
        java.util.Arrays.fill(smallCharIds, -1);
        for (char c = 0; c < smallCharIds.length; c++) {
            Integer id = vocab.get(String.valueOf(c));
            if (id != null) {
                smallCharIds[c] = id;
            }
        }
    }

    /** Number of ids the vocabulary spans (highest id + 1). */
    public int size() {
        return idToToken.length;
    }

    public String idToToken(int id) {
        return id >= 0 && id < idToToken.length ? idToToken[id] : null;
    }

    public Integer tokenToId(String token) {
        return vocab.get(token);
    }

    /** Appends the token ids of one pre-tokenized word to {@code out}. */
    public void encodeWord(String word, IntList out) {
        if (word.isEmpty()) {
            return;
        }
        if (ignoreMerges) {
            Integer whole = vocab.get(word);
            if (whole != null) {
                out.add(whole);
                return;
            }
        }
        int[] cached = cache.get(word);
        if (cached == null) {
            cached = merge(initialSymbols(word));
            if (word.length() <= CACHE_MAX_WORD_CHARS) {
                if (cache.size() >= CACHE_MAX_ENTRIES) {
                    cache.clear();
                }
                cache.put(word, cached);
            }
        }
        out.addAll(cached);
    }

    /** One symbol per character (code point), with byte fallback and unknown-token handling. */
    private int[] initialSymbols(String word) {
        IntList ids = new IntList(word.length());
        int pendingUnk = -1; // an unknown-token symbol not yet added (kept back so fuse_unk can fuse)
        boolean affixes = continuingSubwordPrefix != null || endOfWordSuffix != null;
        for (int i = 0; i < word.length(); ) {
            int cp = word.codePointAt(i);
            int next = i + Character.charCount(cp);
            int id = -1;
            String s = null;
            if (!affixes && cp < smallCharIds.length) {
                id = smallCharIds[cp];
            } else {
                s = word.substring(i, next);
                if (continuingSubwordPrefix != null && i > 0) {
                    s = continuingSubwordPrefix + s;
                }
                if (endOfWordSuffix != null && next == word.length()) {
                    s = s + endOfWordSuffix;
                }
                Integer v = vocab.get(s);
                id = v == null ? -1 : v;
            }
            if (id >= 0) {
                if (pendingUnk >= 0) {
                    ids.add(pendingUnk);
                    pendingUnk = -1;
                }
                ids.add(id);
            } else if (byteFallback && addByteTokens(s == null ? word.substring(i, next) : s, ids)) {
                // as in tokenizers, a pending unknown token stays pending (it lands after these bytes)
            } else if (unkId != null) {
                if (pendingUnk >= 0 && !fuseUnk) {
                    ids.add(pendingUnk);
                }
                pendingUnk = unkId;
            }
            i = next;
        }
        if (pendingUnk >= 0) {
            ids.add(pendingUnk);
        }
        return ids.toArray();
    }

    /** Adds the {@code <0xXX>} tokens of {@code s}'s UTF-8 bytes if all exist; false otherwise. */
    private boolean addByteTokens(String s, IntList ids) {
        byte[] bytes = s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        int[] tokens = new int[bytes.length];
        for (int k = 0; k < bytes.length; k++) {
            Integer t = vocab.get(String.format("<0x%02X>", bytes[k] & 0xFF));
            if (t == null) {
                return false;
            }
            tokens[k] = t;
        }
        ids.addAll(tokens);
        return true;
    }

    /** Applies the merges to a symbol sequence, lowest rank first, leftmost first among equal ranks. */
    private int[] merge(int[] symbols) {
        int n = symbols.length;
        if (n < 2) {
            return symbols;
        }
        int[] sym = symbols.clone();
        int[] prev = new int[n];
        int[] next = new int[n];
        boolean[] removed = new boolean[n];
        for (int k = 0; k < n; k++) {
            prev[k] = k - 1;
            next[k] = k + 1 < n ? k + 1 : -1;
        }
        LongMinHeap heap = new LongMinHeap(n);
        for (int k = 0; k + 1 < n; k++) {
            int rank = pairRanks.get(sym[k], sym[k + 1]);
            if (rank >= 0) {
                heap.push(key(rank, k));
            }
        }
        int remaining = n;
        while (!heap.isEmpty()) {
            long top = heap.pop();
            int rank = (int) (top >>> 32);
            int pos = (int) top;
            if (removed[pos] || next[pos] < 0) {
                continue;
            }
            int right = next[pos];
            int currentRank = pairRanks.get(sym[pos], sym[right]);
            if (currentRank < 0 || mergedId[currentRank] != mergedId[rank]) {
                continue; // the pair at pos changed since this candidate was pushed
            }
            sym[pos] = mergedId[rank];
            removed[right] = true;
            remaining--;
            next[pos] = next[right];
            if (next[right] >= 0) {
                prev[next[right]] = pos;
            }
            if (prev[pos] >= 0) {
                int r = pairRanks.get(sym[prev[pos]], sym[pos]);
                if (r >= 0) {
                    heap.push(key(r, prev[pos]));
                }
            }
            if (next[pos] >= 0) {
                int r = pairRanks.get(sym[pos], sym[next[pos]]);
                if (r >= 0) {
                    heap.push(key(r, pos));
                }
            }
        }
        int[] out = new int[remaining];
        for (int k = 0, j = 0; k < n; k++) {
            if (!removed[k]) {
                out[j++] = sym[k];
            }
        }
        return out;
    }

    private static long key(int rank, int pos) {
        return ((long) rank << 32) | pos;
    }

    /** Builds the model from the parsed {@code model} object. */
    static BpeModel create(Map<String, Integer> vocab, List<String[]> merges, List<JsonNodeReader> mergeNodes,
                           JsonNodeReader model) {
        Double dropout = model.number("dropout");
        if (dropout != null && dropout > 0) {
            throw model.error("dropout", "BPE dropout " + dropout + " makes encoding random; only null or 0 is supported");
        }
        return new BpeModel(vocab, merges, mergeNodes, model.string("unk_token", null), model.bool("fuse_unk", false),
                model.bool("byte_fallback", false), model.bool("ignore_merges", false),
                emptyToNull(model.string("continuing_subword_prefix", null)),
                emptyToNull(model.string("end_of_word_suffix", null)), model);
    }

    private static String emptyToNull(String s) {
        return s == null || s.isEmpty() ? null : s;
    }

    static Map<String, Integer> newVocab(int expected) {
        return new HashMap<>(Math.max(16, expected * 4 / 3 + 1));
    }
}

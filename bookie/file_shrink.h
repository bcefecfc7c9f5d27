/*
 * Deleting large files without stalling the journal.
 *
 * On ext4 one unlink of a full 64-128 MiB file frees all its extents in one
 * filesystem commit, and every journal fdatasync (a commit that converts
 * preallocated extents to written) waits behind it: 60-200 ms measured, the
 * e2e p99.9 at 5k msgs/s. Truncating a few MiB at a time first spreads that
 * work over many short commits. Used for journal segments and entry log
 * files; it takes a while, so never on the add path.
 */
#ifndef SL_BOOKIE_FILE_SHRINK_H
#define SL_BOOKIE_FILE_SHRINK_H

/*
 * Frees the blocks of `name` (relative to dirfd, or a path with AT_FDCWD)
 * 2 MiB at a time with a short pause between, then unlinks it. Shrinking is
 * best effort (the unlink frees what is left). Returns 0, or -1 with errno
 * from the unlink; a file already gone is 0.
 */
int sl_file_shrink_unlink(int dirfd, const char *name);

#endif

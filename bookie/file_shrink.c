/* Design note: see file_shrink.h. */
#include "bookie/file_shrink.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHRINK_STEP (2 << 20)     /* bytes freed per truncation */
#define SHRINK_PAUSE_NS 5000000L  /* between truncations */

int sl_file_shrink_unlink(int dirfd, const char *name) {
  int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat sb;
    if (fstat(fd, &sb) == 0) {
      for (off_t size = sb.st_size; size > 0;) {
        size = size > SHRINK_STEP ? size - SHRINK_STEP : 0;
        if (ftruncate(fd, size) != 0) break;
        struct timespec pause = {0, SHRINK_PAUSE_NS};
        nanosleep(&pause, NULL);
      }
    }
    close(fd);
  }
  if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) return -1;
  return 0;
}

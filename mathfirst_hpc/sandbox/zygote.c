/* The per-worker launcher inside a long-lived bubblewrap sandbox, in C: the same protocol and process tree as
 * zygote.py (read that file's docstring first), without a Python interpreter to fork per job. The server compiles
 * it once (isolation.py, cached by source hash) and falls back to zygote.py when no C compiler is present.
 *
 * Why C: forking and tearing down two Python processes per job cost ~2 ms of CPU; these forks of a small C
 * process cost ~0.3 ms, so an execution costs little more than the program itself.
 *
 * Messages (SOCK_SEQPACKET, fd number in argv[1]); a job is NUL-separated fields, the counts in decimal:
 *   "job" cwd tmp_bytes shm_bytes cpu as fsize nproc core  n_readonly paths...  n_env env...  n_argv argv...
 * with the program's stdin, stdout and stderr attached; "kill"; replies "ready" once, then "<code>\0<error>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define EXIT_SETUP_FAILED 127
#define MAX_FIELDS 4096
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct job {
  char *cwd, **readonly, **env, **argv;
  unsigned long long tmp_bytes, shm_bytes, rl[5];
};

static char message[1 << 20];
static char *fields[MAX_FIELDS];

static void fail(int err_w, const char *fmt, ...) {
  char text[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (n > 0 && write(err_w, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1) < 0) {
  }
  _exit(EXIT_SETUP_FAILED);
}

static int number(const char *text, unsigned long long *value) {
  char *end;
  if (!*text || *text == '-' || *text == '+') return -1;
  errno = 0;
  *value = strtoull(text, &end, 10);
  return errno || *end ? -1 : 0;
}

static int parse(ssize_t size, struct job *job) {
  int count = 0;
  for (char *p = message; p < message + size && count < MAX_FIELDS; p += strlen(p) + 1) fields[count++] = p;
  int i = 0;
#define NEED(k) if (i + (k) > count) return -1
  NEED(9);
  if (strcmp(fields[i++], "job")) return -1;
  job->cwd = fields[i++];
  if (number(fields[i++], &job->tmp_bytes) || number(fields[i++], &job->shm_bytes)) return -1;
  for (int k = 0; k < 5; k++)
    if (number(fields[i++], &job->rl[k])) return -1;
  char ***lists[3] = {&job->readonly, &job->env, &job->argv};
  for (int l = 0; l < 3; l++) {
    NEED(1);
    unsigned long long count_value;
    if (number(fields[i], &count_value) || count_value > MAX_FIELDS) return -1;
    int n = (int)count_value;
    fields[i++] = NULL;  /* becomes the terminator of the previous list */
    NEED(n);
    *lists[l] = &fields[i];
    i += n;
  }
  if (i < MAX_FIELDS) fields[i] = NULL;
  else return -1;
  /* each list ends where the next list's count was: terminated by the NULL written above */
  return job->argv[0] ? 0 : -1;
#undef NEED
}

static int cap_last(void) {
  int last = 63;
  FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
  if (f) {
    if (fscanf(f, "%d", &last) != 1) last = 63;
    fclose(f);
  }
  return last;
}

static int drop_capabilities(int last) {
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  for (int c = 0; c <= last; c++) prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  return (int)syscall(SYS_capset, &header, data);
}

static int exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void run_program(struct job *job, int fds[3], int err_w) {
  static const int resources[5] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_CORE};
  static const char *names[5] = {"cpu", "as", "fsize", "nproc", "core"};
  for (int k = 0; k < 5; k++) {
    struct rlimit r = {job->rl[k], job->rl[k]};
    if (setrlimit(resources[k], &r)) fail(err_w, "setrlimit %s: %s", names[k], strerror(errno));
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);  /* the zygote ignores SIGPIPE */
  for (int k = 0; k < 3; k++)
    if (dup2(fds[k], k) < 0) fail(err_w, "dup2: %s", strerror(errno));
  /* everything else closes at exec; err_w (close-on-exec already) stays usable until then */
  if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC))
    for (int fd = 3; fd < 65536; fd++)
      if (fd != err_w) close(fd);
  if (chdir(job->cwd)) fail(err_w, "chdir %s: %s", job->cwd, strerror(errno));
  execve(job->argv[0], job->argv, job->env);
  fail(err_w, "exec %s: %s", job->argv[0], strerror(errno));
}

static void namespace_init(struct job *job, int fds[3], int err_w, int status_w, int last_cap) {
  char options[64];
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC)) fail(err_w, "unshare: %s", strerror(errno));
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) fail(err_w, "mount /: %s", strerror(errno));
  snprintf(options, sizeof options, "size=%llu,mode=0700", job->tmp_bytes);
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options))
    fail(err_w, "mount /tmp: %s", strerror(errno));
  snprintf(options, sizeof options, "size=%llu,mode=1777", job->shm_bytes);
  if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, options))
    fail(err_w, "mount /dev/shm: %s", strerror(errno));
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
    fail(err_w, "mount /proc: %s", strerror(errno));
  for (char **path = job->readonly; *path; path++)
    if (mount(NULL, *path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL))
      fail(err_w, "mount %s read-only: %s", *path, strerror(errno));
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (drop_capabilities(last_cap)) fail(err_w, "capset: %s", strerror(errno));
  /* vfork: the program borrows this process's memory until it execs (no page tables copied, no copy-on-write
   * faults on either side); run_program only makes system calls on its own fd table, signal handlers, limits
   * and working directory, then execs or _exits */
  pid_t program = vfork();
  if (program < 0) fail(err_w, "fork: %s", strerror(errno));
  if (program == 0) {
    close(status_w);
    run_program(job, fds, err_w);
  }
  if (syscall(SYS_close_range, 0, status_w - 1, 0) || syscall(SYS_close_range, status_w + 1, ~0U, 0))
    for (int fd = 0; fd < 65536; fd++)
      if (fd != status_w) close(fd);
  int code = -1, status;
  pid_t pid;
  while ((pid = wait(&status)) > 0 || (pid < 0 && errno == EINTR)) {
    if (pid == program) code = exit_code(status);
    if (code < 0) continue;
    /* Every process left in this namespace is a child of this one (orphans are reparented to pid 1): none left
     * (ECHILD) means nothing to kill; otherwise kill every process of the namespace but pid 1 */
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    }
    if (pid < 0 && errno == ECHILD) break;
    kill(-1, SIGKILL);
  }
  char text[16];
  int n = snprintf(text, sizeof text, "%d", code < 0 ? EXIT_SETUP_FAILED : code);
  if (write(status_w, text, n) < 0) {
  }
  _exit(0);
}

static ssize_t read_all(int fd, char *buf, size_t size) {
  size_t used = 0;
  ssize_t n;
  while (used < size && ((n = read(fd, buf + used, size - used)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0) used += (size_t)n;
  return (ssize_t)used;
}

/* P's exit code once I reports it (or from I's own exit), killing I on "kill"; -2 if the server went away. */
static int wait_for_job(int control, pid_t init, int status_r) {
  int pidfd = (int)syscall(SYS_pidfd_open, init, 0);
  struct pollfd watched[3] = {{status_r, POLLIN, 0}, {pidfd, POLLIN, 0}, {control, POLLIN, 0}};
  int code = -1;
  for (;;) {
    if (poll(watched, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (watched[0].revents) {
      char text[16];
      ssize_t n = read_all(status_r, text, sizeof text - 1);
      if (n > 0) {
        text[n] = 0;
        code = atoi(text);
        break;
      }
      watched[0].fd = -1;  /* I is gone without a word: its own exit decides */
      if (pidfd < 0) {     /* no pidfds (Linux < 5.3): wait for it directly */
        int status;
        waitpid(init, &status, 0);
        code = exit_code(status);
        break;
      }
      continue;
    }
    if (watched[1].revents) {
      int status;
      waitpid(init, &status, 0);
      code = exit_code(status);
      break;
    }
    if (watched[2].revents) {
      char word[8];
      ssize_t n = recv(control, word, sizeof word, 0);
      if (n <= 0 || (n == 4 && !memcmp(word, "kill", 4))) kill(init, SIGKILL);
      if (n <= 0) {
        waitpid(init, NULL, 0);
        code = -2;
        break;
      }
    }
  }
  if (pidfd >= 0) close(pidfd);
  return code;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int control = atoi(argv[1]);
  int last_cap = cap_last();
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  signal(SIGPIPE, SIG_IGN);  /* a gone server shows as a failed send, not a silent death */
  if (send(control, "ready", 5, 0) < 0) return 1;
  for (;;) {
    char cbuf[CMSG_SPACE(3 * sizeof(int))];
    struct iovec io = {message, sizeof message - 1};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t size = recvmsg(control, &msg, MSG_CMSG_CLOEXEC);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    if (size < 0 && errno == EINTR) continue;
    if (size <= 0) return 0;
    int fds[3] = {-1, -1, -1}, nfds = 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h))
      if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
        nfds = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(fds, CMSG_DATA(h), (nfds < 3 ? nfds : 3) * sizeof(int));
      }
    if (size == 4 && !memcmp(message, "kill", 4) && nfds == 0) continue;  /* arrived after its job ended */
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) nfds = -1;               /* rejected as malformed below */
    message[size] = 0;
    struct job job;
    char reply[2100];
    int err_pipe[2], status_pipe[2];
    if (nfds != 3 || parse(size, &job) || pipe2(err_pipe, O_CLOEXEC) || pipe2(status_pipe, O_CLOEXEC)) {
      for (int k = 0; k < 3; k++)
        if (fds[k] >= 0) close(fds[k]);
      int n = snprintf(reply, sizeof reply, "%d%cmalformed job or no pipes", EXIT_SETUP_FAILED, 0);
      send(control, reply, n, 0);
      continue;
    }
    pid_t init = (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
    if (init == 0) {
      close(control);
      close(err_pipe[0]);
      close(status_pipe[0]);
      namespace_init(&job, fds, err_pipe[1], status_pipe[1], last_cap);
    }
    int clone_errno = errno;
    for (int k = 0; k < 3; k++) close(fds[k]);
    close(err_pipe[1]);
    close(status_pipe[1]);
    int code;
    char error[2048] = "";
    if (init < 0) {
      code = EXIT_SETUP_FAILED;
      snprintf(error, sizeof error, "clone: %s", strerror(clone_errno));
    } else {
      code = wait_for_job(control, init, status_pipe[0]);
      if (code == EXIT_SETUP_FAILED) {
        ssize_t n = read_all(err_pipe[0], error, sizeof error - 1);
        error[n > 0 ? n : 0] = 0;
      }
    }
    close(err_pipe[0]);
    close(status_pipe[0]);
    if (code == -2) return 0;
    int n = snprintf(reply, sizeof reply, "%d%c%s", code, 0, error);
    if (send(control, reply, (size_t)n < sizeof reply ? (size_t)n : sizeof reply - 1, 0) < 0) return 0;
  }
}

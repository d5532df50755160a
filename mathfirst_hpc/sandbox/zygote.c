/* The per-worker launcher inside a long-lived bubblewrap sandbox, in C: the same protocol and process tree as
 * zygote.py (read that file's docstring first), without a Python interpreter to fork per job. The server compiles
 * it once (isolation.py, cached by source hash) and falls back to zygote.py when no C compiler is present.
 *
 * Why C: forking and tearing down two Python processes per job cost ~2 ms of CPU; these forks of a small C
 * process cost ~0.3 ms, so an execution costs little more than the program itself.
 *
 * Messages (SOCK_SEQPACKET, fd number in argv[1]); a job is NUL-separated fields, the counts in decimal:
 *   "job" bind_src bind_dst empty hide cwd tmp_bytes shm_bytes cpu as fsize nproc core
 *   n_readonly paths...  n_env env...  n_argv argv...
 * with the program's stdin, stdout and stderr attached. Jobs are numbered 1, 2, ... in arrival order and run one
 * at a time in that order; up to QUEUE_MAX wait while one runs (the server hands over the next job before the
 * current one ends, so none waits on the server between two programs). "kill\0<n>" kills job n if it runs, or
 * drops it if it waits. Replies: "ready" once, then "<n>\0<code>\0<error>" once per job.
 *
 * Unlike zygote.py, while one job runs this one already starts the next job's init, which builds that job's
 * namespaces and mounts and then waits (struct chain): for a byte from the running job's init, written once every
 * process of that job is gone, or for that init's full exit. So the next program starts one wakeup after the
 * previous one's namespace is empty, with neither the zygote nor the server in between.
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
#define QUEUE_MAX 4
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct job {
  char *bind_src, *bind_dst, *empty, *hide, *cwd, **readonly, **env, **argv;
  unsigned long long tmp_bytes, shm_bytes, rl[5];
};

/* A job received but not yet run: its message (malloc'd) and the program's three fds. */
struct pending {
  char *text;
  ssize_t size;
  int fds[3];
  unsigned long long seq;
};

static char message[1 << 20];
static char *fields[MAX_FIELDS];
static struct pending queue[QUEUE_MAX];
static int queued;                        /* queue[0] is the next to run */
static unsigned long long received;       /* jobs received so far: the number of the latest */

/* A started job: its namespace init and the zygote's ends of its pipes. `go_r` is read by the next job's init,
 * which sets up its namespaces while this job runs and starts its program as soon as this one's init writes a
 * byte there (its namespace swept) or has fully exited: no round trip through the zygote between two programs. */
struct active {
  pid_t init;  /* 0: none */
  unsigned long long seq;
  int status_r, err_r, pidfd, go_r;
};

/* What a job's init waits for before starting its program (the previous job's go pipe and pidfd, -1: nothing)
 * and where it says that its own job is over. */
struct chain {
  int wait_r, wait_pidfd, go_w;
};

static struct active running, armed;     /* the job whose program runs or is next; the one set up after it */
static pid_t zombies[64];                /* inits whose jobs are answered, reaped once their teardown ends */
static int nzombies;

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

static int parse(char *text, ssize_t size, struct job *job) {
  int count = 0;
  for (char *p = text; p < text + size && count < MAX_FIELDS; p += strlen(p) + 1) fields[count++] = p;
  int i = 0;
#define NEED(k) if (i + (k) > count) return -1
  NEED(13);
  if (strcmp(fields[i++], "job")) return -1;
  job->bind_src = fields[i++];
  job->bind_dst = fields[i++];
  job->empty = fields[i++];
  job->hide = fields[i++];
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

/* Blocks until the previous job is over: its init wrote a byte (every process of its namespace is gone), or its
 * init died without one (killed, or its setup failed), in which case its pidfd turns readable only once the kernel
 * has ended every process of its namespace (its file descriptors close before that). */
static void await_previous(struct chain *chain) {
  if (chain->wait_r < 0) return;
  char byte;
  ssize_t n;
  while ((n = read(chain->wait_r, &byte, 1)) < 0 && errno == EINTR) {
  }
  if (n != 1 && chain->wait_pidfd >= 0) {
    struct pollfd done = {chain->wait_pidfd, POLLIN, 0};
    while (poll(&done, 1, -1) < 0 && errno == EINTR) {
    }
  }
}

static void close_all_but(int a, int b) {
  int low = a < b ? a : b, high = a < b ? b : a;
  if ((low > 0 && syscall(SYS_close_range, 0, low - 1, 0)) ||
      (high > low + 1 && syscall(SYS_close_range, low + 1, high - 1, 0)) ||
      syscall(SYS_close_range, high + 1, ~0U, 0))
    for (int fd = 0; fd < 65536; fd++)
      if (fd != a && fd != b) close(fd);
}

static void namespace_init(struct job *job, int fds[3], int err_w, int status_w, struct chain *chain,
                           int last_cap) {
  char options[64];
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC)) fail(err_w, "unshare: %s", strerror(errno));
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) fail(err_w, "mount /: %s", strerror(errno));
  if (*job->bind_src) {
    /* This job's folder (one of the worker's, all bound read-only under `hide`) becomes bind_dst; then the empty
     * read-only folder `empty` is bound over `hide`, so the program sees its own folder and never the one the
     * server is filling for the next job. (Covered, not unmounted: bwrap's mounts are locked in the zygote's
     * nested user namespace; the program has no capability to unmount the cover.) The binds keep their source
     * mounts' read-only, nosuid and nodev flags. */
    if (mount(job->bind_src, job->bind_dst, NULL, MS_BIND | MS_REC, NULL))
      fail(err_w, "bind %s: %s", job->bind_src, strerror(errno));
    if (mount(job->empty, job->hide, NULL, MS_BIND, NULL)) fail(err_w, "cover %s: %s", job->hide, strerror(errno));
  }
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
  await_previous(chain);  /* everything above was set up while the previous job ran */
  /* vfork: the program borrows this process's memory until it execs (no page tables copied, no copy-on-write
   * faults on either side); run_program only makes system calls on its own fd table, signal handlers, limits
   * and working directory, then execs or _exits */
  pid_t program = vfork();
  if (program < 0) fail(err_w, "fork: %s", strerror(errno));
  if (program == 0) {
    close(status_w);
    run_program(job, fds, err_w);
  }
  int go_w = chain->go_w;
  close_all_but(status_w, go_w);  /* the program's fds, the previous job's pipe and pidfd, the queued jobs' fds */
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
  if (write(go_w, "g", 1) < 0) {
  }  /* first the next program may start (nothing of this job is left), then the zygote hears */
  char text[16];
  int n = snprintf(text, sizeof text, "%d", code < 0 ? EXIT_SETUP_FAILED : code);
  if (write(status_w, text, n) < 0) {
  }
  _exit(0);
}

static void reply(int control, unsigned long long seq, int code, const char *error) {
  char text[2100];
  int n = snprintf(text, sizeof text, "%llu%c%d%c%s", seq, 0, code, 0, error);
  if (send(control, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1, 0) < 0) {
  }  /* a gone server shows as the end of the control socket */
}

static void close_fds(int fds[3]) {
  for (int k = 0; k < 3; k++)
    if (fds[k] >= 0) close(fds[k]);
}

/* "kill <n>": SIGKILL to job n's init if started (which ends its namespace), or drop job n if it still waits. */
static void cancel(int control, unsigned long long seq) {
  struct active *started[2] = {&running, &armed};
  for (int a = 0; a < 2; a++)
    if (started[a]->init > 0 && started[a]->seq == seq) {
      kill(started[a]->init, SIGKILL);  /* answered once its exit is seen, in order */
      return;
    }
  for (int q = 0; q < queued; q++)
    if (queue[q].seq == seq) {
      close_fds(queue[q].fds);
      free(queue[q].text);
      memmove(&queue[q], &queue[q + 1], (size_t)(queued - q - 1) * sizeof queue[0]);
      queued--;
      reply(control, seq, 128 + SIGKILL, "");
      return;
    }  /* otherwise it has ended already */
}

/* One message from the server: a job is queued (or refused at once), a kill applied. -1: the server went away. */
static int receive(int control) {
  char cbuf[CMSG_SPACE(3 * sizeof(int))];
  struct iovec io = {message, sizeof message - 1};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &io;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  ssize_t size = recvmsg(control, &msg, MSG_CMSG_CLOEXEC);
  if (size < 0 && errno == EINTR) return 0;
  if (size <= 0) return -1;
  int fds[3] = {-1, -1, -1}, nfds = 0;
  for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h))
    if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
      nfds = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      memcpy(fds, CMSG_DATA(h), (nfds < 3 ? nfds : 3) * sizeof(int));
    }
  message[size] = 0;
  unsigned long long seq;
  if (size > 5 && !memcmp(message, "kill", 5) && nfds == 0) {  /* "kill\0<n>" (memcmp includes the NUL) */
    if (!number(message + 5, &seq)) cancel(control, seq);
    return 0;
  }
  seq = ++received;
  char *text = NULL;
  if (!(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) && nfds == 3 && queued < QUEUE_MAX)
    text = malloc((size_t)size + 1);
  if (text == NULL) {
    close_fds(fds);
    reply(control, seq, EXIT_SETUP_FAILED, queued < QUEUE_MAX ? "malformed job" : "too many jobs queued");
    return 0;
  }
  memcpy(text, message, (size_t)size + 1);
  queue[queued++] = (struct pending){text, size, {fds[0], fds[1], fds[2]}, seq};
  return 0;
}

static ssize_t read_all(int fd, char *buf, size_t size) {
  size_t used = 0;
  ssize_t n;
  while (used < size && ((n = read(fd, buf + used, size - used)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0) used += (size_t)n;
  return (ssize_t)used;
}

static void close_if_open(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Starts the first queued job into `slot`: its init sets up the namespaces, then waits for `previous` (if any) to
 * end before starting the program. A job that cannot start is answered at once (slot->init stays 0). */
static void start_next(int control, int last_cap, struct active *slot, struct active *previous) {
  struct pending next = queue[0];
  memmove(&queue[0], &queue[1], (size_t)(queued - 1) * sizeof queue[0]);
  queued--;
  struct job job;
  int err_pipe[2] = {-1, -1}, status_pipe[2] = {-1, -1}, go_pipe[2] = {-1, -1};
  const char *problem = parse(next.text, next.size, &job) ? "malformed job" : NULL;
  if (!problem && (pipe2(err_pipe, O_CLOEXEC) || pipe2(status_pipe, O_CLOEXEC) || pipe2(go_pipe, O_CLOEXEC)))
    problem = "no pipes";
  pid_t init = -1;
  int clone_errno = 0;
  if (!problem) {
    struct chain chain = {previous ? previous->go_r : -1, previous ? previous->pidfd : -1, go_pipe[1]};
    init = (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
    if (init == 0) {
      close(control);
      close(err_pipe[0]);
      close(status_pipe[0]);
      close(go_pipe[0]);
      namespace_init(&job, next.fds, err_pipe[1], status_pipe[1], &chain, last_cap);
    }
    clone_errno = errno;
  }
  close_fds(next.fds);
  free(next.text);
  close_if_open(&err_pipe[1]);
  close_if_open(&status_pipe[1]);
  close_if_open(&go_pipe[1]);
  if (previous) close_if_open(&previous->go_r);  /* handed to this job's init, the only one to read it */
  if (init <= 0) {
    char error[256];
    snprintf(error, sizeof error, "%s", problem ? problem : "clone: ");
    if (!problem) strncat(error, strerror(clone_errno), sizeof error - strlen(error) - 1);
    close_if_open(&err_pipe[0]);
    close_if_open(&status_pipe[0]);
    close_if_open(&go_pipe[0]);
    reply(control, next.seq, EXIT_SETUP_FAILED, error);
    return;
  }
  *slot = (struct active){init, next.seq, status_pipe[0], err_pipe[0], (int)syscall(SYS_pidfd_open, init, 0),
                          go_pipe[0]};
}

/* The running job's init reported `code` (-1: it exited without a word): answer the job and free its slot. */
static void finish_running(int control, int code) {
  int reaped = 0, status;
  if (code < 0) {  /* I is gone without a word: its own exit decides */
    waitpid(running.init, &status, 0);
    code = exit_code(status);
    reaped = 1;
  }
  char error[2048] = "";
  if (code == EXIT_SETUP_FAILED) {
    ssize_t n = read_all(running.err_r, error, sizeof error - 1);
    error[n > 0 ? n : 0] = 0;
  }
  if (!reaped) {  /* its namespace is empty; its teardown may take a while yet: reaped later */
    if (nzombies == (int)(sizeof zombies / sizeof zombies[0])) {
      waitpid(zombies[0], NULL, 0);
      memmove(&zombies[0], &zombies[1], (size_t)(--nzombies) * sizeof zombies[0]);
    }
    zombies[nzombies++] = running.init;
  }
  close_if_open(&running.status_r);
  close_if_open(&running.err_r);
  close_if_open(&running.pidfd);
  close_if_open(&running.go_r);
  unsigned long long seq = running.seq;
  running.init = 0;
  reply(control, seq, code, error);
}

static void reap_zombies(void) {
  for (int z = 0; z < nzombies;)
    if (waitpid(zombies[z], NULL, WNOHANG) != 0)
      memmove(&zombies[z], &zombies[z + 1], (size_t)(--nzombies - z) * sizeof zombies[0]);
    else
      z++;
}

/* The server went away: end every started job. */
static void end_all(void) {
  struct active *started[2] = {&running, &armed};
  for (int a = 0; a < 2; a++)
    if (started[a]->init > 0) {
      kill(started[a]->init, SIGKILL);
      waitpid(started[a]->init, NULL, 0);
    }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int control = atoi(argv[1]);
  int last_cap = cap_last();
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  signal(SIGPIPE, SIG_IGN);  /* a gone server shows as a failed send, not a silent death */
  if (send(control, "ready", 5, 0) < 0) return 1;
  running.init = armed.init = 0;
  for (;;) {
    reap_zombies();
    if (!running.init && armed.init) {  /* its program starts (or started) as the previous one ended */
      running = armed;
      armed.init = 0;
    }
    if (!running.init && queued) {
      start_next(control, last_cap, &running, NULL);
      continue;
    }
    if (running.init && !armed.init && queued) {
      start_next(control, last_cap, &armed, &running);
      continue;
    }
    struct pollfd watched[3] = {{control, POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
    if (running.init) {
      watched[1].fd = running.status_r;
      watched[2].fd = running.pidfd;
    }
    if (poll(watched, 3, -1) < 0) {
      if (errno == EINTR) continue;
      end_all();
      return 1;
    }
    if (watched[0].revents && receive(control) < 0) {
      end_all();
      return 0;
    }
    if (running.init && watched[1].revents) {
      char text[16];
      ssize_t n;
      while ((n = read(running.status_r, text, sizeof text - 1)) < 0 && errno == EINTR) {
      }
      if (n > 0) {
        text[n] = 0;
        finish_running(control, atoi(text));
      } else {  /* I is gone without a word: its exit decides (directly without pidfds, Linux < 5.3) */
        close_if_open(&running.status_r);
        if (running.pidfd < 0) finish_running(control, -1);
      }
    } else if (running.init && watched[2].revents) {
      finish_running(control, -1);
    }
  }
}

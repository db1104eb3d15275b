/*
 * The Pod sandbox's PID 1 for the test bed's containerd (`sandbox_image`), in the image
 * localhost/smsc-pause:3.10.
 *
 * Why we write it: the test machine reaches no container registry, so registry.k8s.io/pause
 * cannot be pulled, and Debian ships no pause image. This does what that one does: it holds the
 * Pod's namespaces open doing nothing, reaps the zombies it inherits as PID 1 (with a shared
 * process namespace), and exits 0 on SIGINT or SIGTERM (as PID 1 the kernel drops any signal it
 * has no handler for, so both are caught). Built static with the machine's cc by tools/images.sh.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10"

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

static void on_child(int sig) { (void)sig; }

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("smsc-pause %s\n", VERSION);
    return 0;
  }
  if (getpid() != 1) {
    fprintf(stderr, "pause: warning: not PID 1\n");
  }

  /* Block the three signals except inside sigsuspend, so none lands between the checks. */
  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &blocked, &waiting) != 0) {
    perror("pause: sigprocmask");
    return 1;
  }
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGCHLD);

  struct sigaction stop = {0}, child = {0};
  stop.sa_handler = on_stop;
  sigemptyset(&stop.sa_mask);
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP;
  sigemptyset(&child.sa_mask);
  if (sigaction(SIGINT, &stop, NULL) != 0 || sigaction(SIGTERM, &stop, NULL) != 0 ||
      sigaction(SIGCHLD, &child, NULL) != 0) {
    perror("pause: sigaction");
    return 1;
  }

  for (;;) {
    sigsuspend(&waiting);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    if (stop_signal != 0) {
      fprintf(stderr, "pause: got %s, exiting\n", stop_signal == SIGTERM ? "SIGTERM" : "SIGINT");
      return 0;
    }
  }
}

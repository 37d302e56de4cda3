/*
 * dlmc: a small C client of Debian's libdlm3, used by the VM tests to
 * show that C programs written for libdlm work unchanged on a Locus
 * node, with locusd as the DLM's control daemon.
 *
 *   dlmc [-c] [-n] [-m ex|pr|cr|cw|pw|nl] [-h SECONDS] LOCKSPACE RESOURCE
 *
 * -c creates (joins) the lockspace with dlm_create_lockspace and
 * releases it at the end; without it the lockspace must exist and is
 * opened with dlm_open_lockspace. -n asks with LKF_NOQUEUE. -h holds the
 * lock that long before unlocking.
 *
 * Prints one line, "granted MODE lkid=N" or "busy" (exit 11, the
 * request was not queued), or the failing call and errno (exit 1).
 */
#include <errno.h>
#include <sys/types.h>
#include <libdlm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int mode_of(const char *s)
{
	static const struct {
		const char *name;
		int mode;
	} modes[] = {
		{"nl", LKM_NLMODE}, {"cr", LKM_CRMODE}, {"cw", LKM_CWMODE},
		{"pr", LKM_PRMODE}, {"pw", LKM_PWMODE}, {"ex", LKM_EXMODE},
	};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(s, modes[i].name) == 0)
			return modes[i].mode;
	return -1;
}

int main(int argc, char **argv)
{
	int create = 0, flags = 0, hold = 0, opt;
	const char *mname = "ex";
	while ((opt = getopt(argc, argv, "cnm:h:")) != -1) {
		switch (opt) {
		case 'c': create = 1; break;
		case 'n': flags |= LKF_NOQUEUE; break;
		case 'm': mname = optarg; break;
		case 'h': hold = atoi(optarg); break;
		default: goto usage;
		}
	}
	if (argc - optind != 2)
		goto usage;
	int mode = mode_of(mname);
	if (mode < 0) {
		fprintf(stderr, "dlmc: unknown mode %s\n", mname);
		return 2;
	}
	const char *lsname = argv[optind], *res = argv[optind + 1];

	dlm_lshandle_t ls = create ? dlm_create_lockspace(lsname, 0600)
				   : dlm_open_lockspace(lsname);
	if (ls == NULL) {
		fprintf(stderr, "dlmc: %s %s: %s\n",
			create ? "dlm_create_lockspace" : "dlm_open_lockspace",
			lsname, strerror(errno));
		return 1;
	}
	if (dlm_ls_pthread_init(ls) != 0) {
		fprintf(stderr, "dlmc: dlm_ls_pthread_init: %s\n", strerror(errno));
		return 1;
	}

	struct dlm_lksb lksb;
	memset(&lksb, 0, sizeof(lksb));
	int rv = dlm_ls_lock_wait(ls, mode, &lksb, flags, res, strlen(res), 0,
				  NULL, NULL, NULL);
	if (rv != 0 || lksb.sb_status != 0) {
		int e = rv != 0 ? errno : lksb.sb_status;
		if (e == EAGAIN) {
			printf("busy\n");
			return 11;
		}
		fprintf(stderr, "dlmc: dlm_ls_lock_wait %s %s: %s\n", lsname, res,
			strerror(e));
		return 1;
	}
	printf("granted %s lkid=%u\n", mname, lksb.sb_lkid);
	fflush(stdout);
	if (hold > 0)
		sleep(hold);
	if (dlm_ls_unlock_wait(ls, lksb.sb_lkid, 0, &lksb) != 0) {
		fprintf(stderr, "dlmc: dlm_ls_unlock_wait: %s\n", strerror(errno));
		return 1;
	}
	if (create) {
		if (dlm_release_lockspace(lsname, ls, 1) != 0) {
			fprintf(stderr, "dlmc: dlm_release_lockspace %s: %s\n", lsname,
				strerror(errno));
			return 1;
		}
	} else {
		dlm_close_lockspace(ls);
	}
	return 0;

usage:
	fprintf(stderr, "usage: dlmc [-c] [-n] [-m MODE] [-h SECONDS] LOCKSPACE RESOURCE\n");
	return 2;
}

#!/bin/sh
# Inside the site's Debian unstable root (scripts/site.sh up): prepare HTCondor's state
# directories under /pilot-work and become the pool's condor_master. This process holds the
# site's mount namespace; `scripts/site.sh exec` enters it (HTCondor's FS authentication
# needs the submitter and the schedd to see the same /tmp).
set -eu
export CONDOR_CONFIG=/pilot-work/etc/condor_config
for d in run/condor log/condor lock/condor spool/condor lib/condor/execute lib/condor/cred_dir; do
  mkdir -p "/pilot-work/condor/$d"
done
chown -R condor:condor /pilot-work/condor
chmod 0755 /pilot-work/condor/lib/condor/execute
chmod 0700 /pilot-work/condor/lib/condor/cred_dir
exec condor_master -f

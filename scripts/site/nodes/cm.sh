#!/bin/sh
# Inside the site's Debian unstable root, in the central manager's network namespace
# (scripts/site/nodes.sh up): the site's /etc/hosts, HTCondor's state under /pilot-work/cm,
# then become the central manager's condor_master. This process holds the site's mount
# namespace; the worker nodes' Apptainer and `scripts/site.sh nodes exec` enter it.
set -eu
export CONDOR_CONFIG=/pilot-work/etc/condor_config
mount --bind /pilot-work/etc/hosts /etc/hosts
echo cm > /proc/sys/kernel/hostname   # its own UTS namespace (nodes.sh)
for d in log spool execute lock run cred_dir; do
  mkdir -p "/pilot-work/cm/$d"
done
chown -R condor:condor /pilot-work/cm
chmod 0700 /pilot-work/cm/cred_dir
exec condor_master -f

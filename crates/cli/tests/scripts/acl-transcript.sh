#!/usr/bin/env bash
# Runs the same ACL session in directory $1 and prints what it sees: getfacl's views,
# modes, the errors setfacl reports and what a named user may do. The ACL test runs it
# on a Nectar mount and on a local file system (tmpfs) and compares the two transcripts.
cd "$1" || exit 1
umask 022
as_user() { setpriv --reuid="$1" --regid="$1" --clear-groups sh -c "$2" 2>&1 | sed "s|$PWD/||"; }

# An access ACL with a named user; the group bits of the mode show the mask.
touch f; setfacl -m u:1234:rw f; getfacl -n f; stat -c '%A' f
echo data > f
as_user 1234 'cat f && echo ok >> f && echo 1234 writes'
as_user 1235 'cat f || echo 1235 denied'
# chmod moves the mask; the named user loses and regains write.
chmod 640 f; getfacl -n f; as_user 1234 'echo x >> f || echo 1234 denied after chmod'
chmod 664 f; getfacl -n f
# A default ACL passes on to files, directories and special files; the umask is ignored.
mkdir d; setfacl -d -m u:1234:rwx,g:99:r d; getfacl -n d
touch d/x; mkdir d/sub; mknod d/fifo p; ln -s x d/sym
getfacl -n d/x d/sub d/fifo; stat -c '%n %A' d/x d/sub d/fifo d/sym
(umask 077; touch d/y; mkdir d/z); stat -c '%n %A' d/y d/z
# Without a default ACL the umask applies.
(umask 077; touch plain; mkdir plaindir); stat -c '%n %A' plain plaindir
# Removing ACLs, and an ACL equal to a mode.
setfacl -b f; getfacl -n f; stat -c '%A' f
setfacl -m u::rwx,g::r,o::- f; getfacl -n f; stat -c '%A' f
setfacl -k d; getfacl -n d; touch d/after; getfacl -n d/after
# The mask entry set directly; removing a named entry.
setfacl -m m::r d/x; getfacl -n d/x; stat -c '%A' d/x
setfacl -x u:1234 d/x; getfacl -n d/x
# Errors: a default ACL on a file; an ACL set by someone who does not own the node.
setfacl -d -m u:1:r f 2>&1 | sed 's/^setfacl: //'
as_user 1234 'setfacl -m u:1235:r f'
# Directory search through a named group.
mkdir g; chmod 700 g; touch g/in; setfacl -m g:77:x g
setpriv --reuid=1300 --regid=1300 --groups=77 sh -c 'stat -c %n g/in' 2>&1
setpriv --reuid=1300 --regid=1300 --groups=78 sh -c 'stat -c %n g/in' 2>&1 | sed "s|$PWD/||"
# What listxattr shows.
getfattr -d -m - f d d/sub 2>/dev/null | sed 's/=.*//'
# An access ACL set by an owner outside the owning group clears setgid.
touch sg; chown 1234:0 sg; chmod 2775 sg; as_user 1234 'setfacl -m u:1235:r sg'; stat -c '%A' sg
mkdir sgd; chown 1234:0 sgd; chmod 2775 sgd; as_user 1234 'setfacl -m u:1235:rx sgd'; stat -c '%A' sgd

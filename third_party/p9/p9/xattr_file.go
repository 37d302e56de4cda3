package p9

import "github.com/hugelgupf/p9/linux"

// xattrFile is the file of a fid made by Txattrwalk (Locus): the
// attribute's value is in the fid's pendingXattr, read by Tread; every
// other operation on such a fid is invalid, and its clunk releases
// nothing but the fid.
type xattrFile struct{}

var _ File = xattrFile{}

func (xattrFile) Walk([]string) ([]QID, File, error) { return nil, nil, linux.EINVAL }
func (xattrFile) WalkGetAttr([]string) ([]QID, File, AttrMask, Attr, error) {
	return nil, nil, AttrMask{}, Attr{}, linux.EINVAL
}
func (xattrFile) StatFS() (FSStat, error) { return FSStat{}, linux.EINVAL }
func (xattrFile) GetAttr(AttrMask) (QID, AttrMask, Attr, error) {
	return QID{}, AttrMask{}, Attr{}, linux.EINVAL
}
func (xattrFile) SetAttr(SetAttrMask, SetAttr) error        { return linux.EINVAL }
func (xattrFile) Close() error                              { return nil }
func (xattrFile) Open(OpenFlags) (QID, uint32, error)       { return QID{}, 0, linux.EINVAL }
func (xattrFile) ReadAt([]byte, int64) (int, error)         { return 0, linux.EINVAL }
func (xattrFile) WriteAt([]byte, int64) (int, error)        { return 0, linux.EINVAL }
func (xattrFile) SetXattr(string, []byte, XattrFlags) error { return linux.EINVAL }
func (xattrFile) GetXattr(string) ([]byte, error)           { return nil, linux.EINVAL }
func (xattrFile) ListXattrs() ([]string, error)             { return nil, linux.EINVAL }
func (xattrFile) RemoveXattr(string) error                  { return linux.EINVAL }
func (xattrFile) FSync() error                              { return linux.EINVAL }
func (xattrFile) Lock(int, LockType, LockFlags, uint64, uint64, string) (LockStatus, error) {
	return LockStatusError, linux.EINVAL
}
func (xattrFile) Create(string, OpenFlags, FileMode, UID, GID) (File, QID, uint32, error) {
	return nil, QID{}, 0, linux.EINVAL
}
func (xattrFile) Mkdir(string, FileMode, UID, GID) (QID, error) { return QID{}, linux.EINVAL }
func (xattrFile) Symlink(string, string, UID, GID) (QID, error) { return QID{}, linux.EINVAL }
func (xattrFile) Link(File, string) error                       { return linux.EINVAL }
func (xattrFile) Mknod(string, FileMode, uint32, uint32, UID, GID) (QID, error) {
	return QID{}, linux.EINVAL
}
func (xattrFile) Rename(File, string) error               { return linux.EINVAL }
func (xattrFile) RenameAt(string, File, string) error     { return linux.EINVAL }
func (xattrFile) UnlinkAt(string, uint32) error           { return linux.EINVAL }
func (xattrFile) Readdir(uint64, uint32) (Dirents, error) { return nil, linux.EINVAL }
func (xattrFile) Readlink() (string, error)               { return "", linux.EINVAL }
func (xattrFile) Renamed(File, string)                    {}

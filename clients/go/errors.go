package frameseek

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the server's errors.
const ErrorDomain = "frameseek.dev"

// Code returns the gRPC status code of err (codes.OK for nil, codes.Unknown for non-gRPC errors).
func Code(err error) codes.Code { return status.Code(err) }

// ErrorInfo returns the google.rpc.ErrorInfo the server attached to err, if any.
func ErrorInfo(err error) (*errdetails.ErrorInfo, bool) {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return nil, false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info, true
		}
	}
	return nil, false
}

// ErrorReason returns the machine-readable reason of a server error (e.g. "CORRUPT_MEDIA",
// "DIMENSION_MISMATCH"; see the ErrorReason enum in the proto), or "" when there is none.
func ErrorReason(err error) string {
	if info, ok := ErrorInfo(err); ok {
		return info.GetReason()
	}
	return ""
}

func cloneMsg[T proto.Message](m T) T { return proto.Clone(m).(T) }

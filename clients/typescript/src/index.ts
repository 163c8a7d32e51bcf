export * from "./client";
export * from "./errors";
/** The generated messages, enums and stub (ts-proto, from proto/frameseek/v1). */
export * as v1 from "../gen/frameseek/v1/frameseek";

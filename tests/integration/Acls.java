import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

/**
 * Creates ACLs through Kafka's own Admin client (aiokafka has no ACL calls), for tests of
 * a cluster that withholds rights, as managed clusters do. Run from source with the broker's
 * jars: java -cp 'deploy/kafka/lib/*' Acls.java BOOTSTRAP ACL...; each ACL is
 * PERMISSION:PRINCIPAL_TYPE:PRINCIPAL:OPERATION:RESOURCE_TYPE:NAME, for example
 * DENY:User:ANONYMOUS:DESCRIBE_CONFIGS:CLUSTER:kafka-cluster. A NAME ending in * (other than
 * * itself, every resource) is a prefix: TOPIC:sw-* is every topic whose name starts sw-.
 */
public class Acls {
    static boolean prefixed(String name) {
        return name.length() > 1 && name.endsWith("*");
    }

    static String name(String name) {
        return prefixed(name) ? name.substring(0, name.length() - 1) : name;
    }

    static PatternType pattern(String name) {
        return prefixed(name) ? PatternType.PREFIXED : PatternType.LITERAL;
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        List<AclBinding> bindings = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] f = args[i].split(":", 6);
            if (f.length != 6) {
                throw new IllegalArgumentException("not PERMISSION:TYPE:PRINCIPAL:OPERATION:RESOURCE:NAME: " + args[i]);
            }
            bindings.add(new AclBinding(
                new ResourcePattern(ResourceType.fromString(f[4]), name(f[5]), pattern(f[5])),
                new AccessControlEntry(f[1] + ":" + f[2], "*", AclOperation.fromString(f[3]),
                                       AclPermissionType.fromString(f[0]))));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get();
        }
    }
}
